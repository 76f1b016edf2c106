"""The inbox worker (``core.inbox``) answering through ChatService: the runtime as the bots
build it, a real store (SQLite and PostgreSQL) and the loopback model."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.runtime import Runtime, open_runtime
from bots.settings import load_settings
from core.inbox import Claim, Handler, Inbox
from core.service import ChatService
from core.store.models import InboundEvent, Message
from core.store.queue import InboxStore
from core.types import Author, ChatRequest, FinalEvent, ReplyEvent
from tests.fakes.model_server import FakeModelServer, Reply

PLATFORM = "slack"
SCOPE = "C1/1710000000.000001"


@pytest.fixture
async def runtime(engine: AsyncEngine, fake_model: FakeModelServer,
                  tmp_path: Path) -> AsyncIterator[Runtime]:
    """The runtime ``open_runtime`` builds from settings, on the test's database."""
    settings = load_settings({
        "CHATBRIDGE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "CHATBRIDGE_MODEL_BASE_URL": fake_model.openai_base,
        "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen-plus",
        "CHATBRIDGE_RETRY_SECONDS": "1",
        "CHATBRIDGE_LEASE_SECONDS": "5",
        "CHATBRIDGE_INBOX_POLL_SECONDS": "0.05",
    }, cwd=tmp_path)
    async with open_runtime(settings) as rt:
        yield rt


Answered = list[tuple[Claim, list[ReplyEvent]]]


def requests_of(claim: Claim) -> list[ChatRequest]:
    """The chat messages of a claim, as an adapter would rebuild them from the payloads."""
    return [ChatRequest(platform=claim.platform, scope=claim.scope,
                        author=Author(e.payload["user"], e.payload["name"]),
                        text=e.payload["text"], event_id=e.event_id)
            for e in claim.events]


def answerer(service: ChatService, answered: Answered) -> Handler:
    """An inbox handler answering each claim in one turn, recording what it saw."""

    async def handle(claim: Claim) -> None:
        replies = [r async for r in service.answer(requests_of(claim), claim)]
        answered.append((claim, replies))

    return handle


async def say(inbox: Inbox, text: str, *, scope: str = SCOPE, platform: str = PLATFORM,
              delay: float = 0.0) -> bool:
    return await inbox.receive(platform=platform, event_id=f"ev-{text}", scope=scope,
                               payload={"user": "U1", "name": "Ann", "text": text},
                               delay=delay)


async def until(check: Callable[[], bool]) -> None:
    """Wait (at most 3 s) until ``check()`` holds."""
    async with asyncio.timeout(3):
        while not check():  # noqa: ASYNC110 (the fake model runs in a thread)
            await asyncio.sleep(0.01)


def model_calls(fake: FakeModelServer) -> list[list[tuple[str, Any]]]:
    """Each model request's messages as (role, content), system prompt left out."""
    return [[(m["role"], m["content"]) for m in r.json["messages"][1:]]
            for r in fake.requests if r.path.endswith("/chat/completions")]


async def messages(engine: AsyncEngine) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Message.id, Message.role, Message.text)
                                   .order_by(Message.id))).all()
    return [(r.id, r.role, r.text) for r in rows]


async def events(engine: AsyncEngine) -> dict[str, tuple[str, int, int | None]]:
    """Each inbound event's (status, attempts, message_id)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(InboundEvent.event_id, InboundEvent.status,
                                          InboundEvent.attempts, InboundEvent.message_id)
                                   )).all()
    return {r.event_id: (r.status, r.attempts, r.message_id) for r in rows}


async def test_messages_arriving_during_a_turn_are_answered_in_one_more_turn(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    fake_model.enqueue(Reply(text="First answer.", delay=0.5), Reply(text="Second answer."))
    answered: Answered = []
    inbox = runtime.inbox
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    inbox.start()
    assert await say(inbox, "one")
    await until(lambda: len(model_calls(fake_model)) == 1)  # the first turn is running
    assert await say(inbox, "two")
    assert await say(inbox, "three")
    assert not await say(inbox, "two")  # a redelivery
    assert await runtime.service.pending_events() == 3
    await asyncio.wait_for(inbox.wait_idle(), 3)
    calls = model_calls(fake_model)
    assert len(calls) == 2
    assert calls[0] == [("user", "one")]
    assert calls[1] == [("user", "one"), ("assistant", "First answer."), ("user", "two"),
                        ("user", "three")]
    assert [[e.event_id for e in c.events] for c, _ in answered] == [
        ["ev-one"], ["ev-two", "ev-three"]]
    finals = [r[-1] for _, r in answered]
    assert [f.text for f in finals if isinstance(f, FinalEvent)] == [
        "First answer.", "Second answer."]
    assert [(role, text) for _, role, text in await messages(engine)] == [
        ("user", "one"), ("assistant", "First answer."), ("user", "two"), ("user", "three"),
        ("assistant", "Second answer.")]
    state = await events(engine)
    assert {k: v[:2] for k, v in state.items()} == dict.fromkeys(state, ("done", 1))
    assert await runtime.service.pending_events() == 0


async def test_turn_cancelled_at_shutdown_is_answered_by_another_replica(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    fake_model.enqueue(Reply(text="Never delivered.", delay=3), Reply(text="Handed over."))
    answered: Answered = []
    first = runtime.inbox
    first.register(PLATFORM, answerer(runtime.service, answered))
    await say(first, "one")
    await say(first, "two")
    first.start()
    await until(lambda: len(model_calls(fake_model)) == 1)
    began = time.monotonic()
    await first.stop(grace=0.1)
    assert time.monotonic() - began < 1
    assert answered == []  # the handler was cancelled
    state = await events(engine)
    assert {k: v[:2] for k, v in state.items()} == {"ev-one": ("received", 0),
                                                    "ev-two": ("received", 0)}
    stored = await messages(engine)
    assert [(role, text) for _, role, text in stored] == [("user", "one"), ("user", "two")]
    assert [state["ev-one"][2], state["ev-two"][2]] == [m[0] for m in stored]
    assert await runtime.service.pending_events() == 2
    assert await InboxStore(runtime.store).held_by(first.owner) == 0

    second = Inbox(runtime.store, owner="replica-2", poll_seconds=0.05, lease_seconds=5)
    second.register(PLATFORM, answerer(runtime.service, answered))
    second.start()
    try:
        await asyncio.wait_for(second.wait_idle(), 3)
    finally:
        await second.stop(1)
    [(claim, replies)] = answered
    assert [(e.event_id, e.attempts, e.message_id) for e in claim.events] == [
        ("ev-one", 1, stored[0][0]), ("ev-two", 1, stored[1][0])]  # a hand-back is no try
    assert isinstance(replies[-1], FinalEvent) and replies[-1].text == "Handed over."
    assert model_calls(fake_model)[1] == [("user", "one"), ("user", "two")]
    assert [(role, text) for _, role, text in await messages(engine)] == [
        ("user", "one"), ("user", "two"), ("assistant", "Handed over.")]
    state = await events(engine)
    assert {k: v[:2] for k, v in state.items()} == {"ev-one": ("done", 1),
                                                    "ev-two": ("done", 1)}
    assert await runtime.service.pending_events() == 0


async def test_expired_lease_retry_reuses_the_stored_user_message(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    """Replica A dies in the middle of a turn (after begin_turn stored the message);
    replica B takes the key once A's lease expires and answers without storing it again."""
    queue = InboxStore(runtime.store)
    await queue.enqueue(platform=PLATFORM, event_id="ev-q", scope=SCOPE,
                        payload={"user": "U1", "name": "Ann", "text": "question"})
    fake_model.enqueue(Reply(text="Lost.", delay=3), Reply(text="Answer."))
    claimed_at = time.monotonic()
    [a] = await queue.claim(owner="A", lease_seconds=0.3, limit=5)
    assert a.events[0].message_id is None

    async def turn(claim: Claim) -> list[ReplyEvent]:
        return [r async for r in runtime.service.answer(requests_of(claim), claim)]

    dying = asyncio.create_task(turn(a))
    await until(lambda: len(model_calls(fake_model)) == 1)
    dying.cancel()  # A never finishes, and never releases the key
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    [(user_id, role, _)] = await messages(engine)
    assert role == "user"
    assert (await events(engine))["ev-q"] == ("processing", 1, user_id)

    # A's lease runs out 0.3 s after its last extension (the claim, or begin_turn's fence,
    # whenever the loaded machine ran it): B claims as soon as it has.
    await asyncio.sleep(max(0.0, claimed_at + 0.3 - time.monotonic()))
    taken: list[Claim] = []
    while not taken and time.monotonic() < claimed_at + 10:
        taken = await queue.claim(owner="B", lease_seconds=5, limit=5)
        await asyncio.sleep(0 if taken else 0.02)
    [b] = taken
    [event] = b.events
    assert (event.event_id, event.attempts, event.message_id) == ("ev-q", 2, user_id)
    replies = await turn(b)
    assert isinstance(replies[-1], FinalEvent) and replies[-1].text == "Answer."
    await queue.release(b, owner="B")
    assert model_calls(fake_model)[1] == [("user", "question")]
    stored = await messages(engine)
    assert [role for _, role, _ in stored] == ["user", "assistant"]
    assert stored[0][0] == user_id
    assert (await events(engine))["ev-q"] == ("done", 2, user_id)


async def test_lease_is_renewed_while_a_long_turn_runs(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    fake_model.enqueue(Reply(text="Slow answer.", delay=1.2))
    inbox = Inbox(runtime.store, owner="A", lease_seconds=0.45, poll_seconds=0.05)
    answered: Answered = []
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    inbox.start()
    other = InboxStore(runtime.store)
    try:
        await say(inbox, "slow")
        await until(lambda: len(model_calls(fake_model)) == 1)
        while not answered:  # well past the 0.45 s lease: nobody else may take the key
            assert await other.claim(owner="B", lease_seconds=5, limit=5) == []
            await asyncio.sleep(0.05)
        await asyncio.wait_for(inbox.wait_idle(), 3)
    finally:
        await inbox.stop(1)
    assert (await events(engine))["ev-slow"][:2] == ("done", 1)
    assert len(model_calls(fake_model)) == 1


async def test_failing_handler_closes_its_events_as_failed(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    answered: Answered = []
    good = answerer(runtime.service, answered)

    async def handle(claim: Claim) -> None:
        if any(e.payload["text"] == "boom" for e in claim.events):
            raise RuntimeError("adapter bug")
        await good(claim)

    inbox = runtime.inbox
    inbox.register(PLATFORM, handle)
    await say(inbox, "boom")
    inbox.start()
    await asyncio.wait_for(inbox.wait_idle(), 3)
    await say(inbox, "fine")  # the key is free again
    await asyncio.wait_for(inbox.wait_idle(), 3)
    state = await events(engine)
    assert state["ev-boom"][:2] == ("failed", 1) and state["ev-fine"][:2] == ("done", 1)
    assert len(answered) == 1 and len(model_calls(fake_model)) == 1


async def test_delayed_event_is_answered_when_due(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    inbox = Inbox(runtime.store, owner="A", poll_seconds=30)  # only the delay's wake-up
    answered: Answered = []
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    inbox.start()
    try:
        began = time.monotonic()
        await say(inbox, "album part 1", delay=0.5)
        await say(inbox, "album part 2", delay=0.5)
        await asyncio.sleep(0.2)
        assert answered == [] and model_calls(fake_model) == []
        await until(lambda: bool(answered))
        assert time.monotonic() - began >= 0.5
    finally:
        await inbox.stop(1)
    [(claim, _)] = answered
    assert [e.payload["text"] for e in claim.events] == ["album part 1", "album part 2"]


async def test_events_of_platforms_without_a_handler_are_left_waiting(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    """A Slack replica sharing the database with another platform's replicas must not
    take (and use up the attempts of) events it cannot answer."""
    answered: Answered = []
    inbox = runtime.inbox
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    await say(inbox, "for telegram", platform="telegram", scope="chat-1")
    inbox.start()
    for text in ("one", "two", "three"):
        await say(inbox, text, scope=f"C1/{text}")
    await until(lambda: len(answered) == 3)
    await asyncio.sleep(0.2)  # several polls
    state = await events(engine)
    assert state["ev-for telegram"] == ("received", 0, None)
    assert await InboxStore(runtime.store).held_by(inbox.owner) == 0
    assert await runtime.service.pending_events() == 1
    await inbox.stop(1)


async def test_turn_that_ends_within_the_grace_is_not_handed_back(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    fake_model.enqueue(Reply(text="Just in time.", delay=0.3))
    answered: Answered = []
    inbox = runtime.inbox
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    await say(inbox, "one")
    inbox.start()
    await until(lambda: len(model_calls(fake_model)) == 1)
    await inbox.stop(grace=2)
    assert len(answered) == 1
    assert (await events(engine))["ev-one"][:2] == ("done", 1)
    assert [role for _, role, _ in await messages(engine)] == ["user", "assistant"]
    assert not await say(inbox, "one")  # still deduplicated after the turn


async def test_wait_idle_is_not_fooled_by_a_claim_in_flight(
    runtime: Runtime, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a claim's commit and its task starting, the events are ``processing`` and
    nothing runs yet: that is not idle."""
    claim = InboxStore.claim

    async def slow_claim(self: InboxStore, **kwargs: Any) -> list[Claim]:
        claims = await claim(self, **kwargs)
        if claims:
            await asyncio.sleep(0.2)  # committed, not handed to a task yet
        return claims

    monkeypatch.setattr(InboxStore, "claim", slow_claim)
    answered: Answered = []
    inbox = runtime.inbox
    inbox.register(PLATFORM, answerer(runtime.service, answered))
    await say(inbox, "one")
    inbox.start()
    await asyncio.sleep(0.05)  # the claim is in flight
    await asyncio.wait_for(inbox.wait_idle(), 3)
    assert len(answered) == 1


async def test_replica_that_lost_its_lease_mid_turn_stores_nothing(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    """A is too slow to renew (a starved machine); B takes the conversation over and
    answers. A's late answer is refused by the lease check in finish_turn: one answer."""
    queue = InboxStore(runtime.store)
    await queue.enqueue(platform=PLATFORM, event_id="ev-slow", scope=SCOPE,
                        payload={"user": "U1", "name": "Ann", "text": "question"})
    fake_model.enqueue(Reply(text="A, too late.", delay=1.0), Reply(text="B answers."))
    [a] = await queue.claim(owner="A", lease_seconds=0.3, limit=5)

    async def turn(claim: Claim) -> list[ReplyEvent]:
        return [r async for r in runtime.service.answer(requests_of(claim), claim)]

    slow = asyncio.create_task(turn(a))
    await until(lambda: len(model_calls(fake_model)) == 1)
    await asyncio.sleep(0.35)  # A's lease runs out while its model call is still going
    [b] = await queue.claim(owner="B", lease_seconds=5, limit=5)
    replies_b = await turn(b)
    assert isinstance(replies_b[-1], FinalEvent) and replies_b[-1].text == "B answers."
    replies_a = await slow
    assert not any(isinstance(r, FinalEvent) for r in replies_a)
    assert [(role, text) for _, role, text in await messages(engine)] == [
        ("user", "question"), ("assistant", "B answers.")]


async def test_turn_under_a_lost_lease_does_not_start(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    queue = InboxStore(runtime.store)
    await queue.enqueue(platform=PLATFORM, event_id="ev-late", scope=SCOPE,
                        payload={"user": "U1", "name": "Ann", "text": "question"})
    [a] = await queue.claim(owner="A", lease_seconds=0.1, limit=5)
    await asyncio.sleep(0.15)
    [b] = await queue.claim(owner="B", lease_seconds=5, limit=5)
    assert [r async for r in runtime.service.answer(requests_of(a), a)] == []
    assert fake_model.requests == [] and await messages(engine) == []
    await queue.release(b, owner="B")


async def test_a_message_that_cannot_be_used_does_not_cost_the_batch_its_answer(
    runtime: Runtime, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    queue = InboxStore(runtime.store)
    for name, text in (("a", "first"), ("b", "x" * 40_000), ("c", "third")):
        await queue.enqueue(platform=PLATFORM, event_id=f"ev-{name}", scope=SCOPE,
                            payload={"user": "U1", "name": "Ann", "text": text})
    fake_model.enqueue(Reply(text="Both answered."))
    [claim] = await queue.claim(owner="A", lease_seconds=5, limit=5)
    replies = [r async for r in runtime.service.answer(requests_of(claim), claim)]
    await queue.release(claim, owner="A")
    final = replies[-1]
    assert isinstance(final, FinalEvent) and final.text == "Both answered."
    assert "too long (40000 characters)" in final.notice
    assert model_calls(fake_model)[0] == [("user", "first"), ("user", "third")]
    assert [(role, text) for _, role, text in await messages(engine)] == [
        ("user", "first"), ("user", "third"), ("assistant", "Both answered.")]
    async with engine.connect() as conn:
        kept = (await conn.execute(select(InboundEvent.payload))).scalars().all()
    assert kept == [None, None, None]  # answered: the person's words live in the conversation
