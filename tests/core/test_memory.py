"""Rolling summaries end to end: real store (SQLite and PostgreSQL), real aiohttp, loopback
model scripted to summarise (it keeps the lines starting with FACT:)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.memory import MemoryOptions
from core.model import OpenAIClient, RetryingClient, RetryPolicy
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import ConversationMemory
from core.types import Author, ChatRequest, ErrorEvent, FinalEvent, ReplyEvent
from tests.fakes.model_server import FakeModelServer, Reply, is_summary_request

SCOPE = "console/memory"
PROFILE = Profile(system_prompt="You are terse.", max_context_messages=8,
                  summary_model="qwen-flash")


def make_service(engine: AsyncEngine, http: aiohttp.ClientSession, fake: FakeModelServer,
                 memory: MemoryOptions | None = None) -> ChatService:
    async def no_sleep(_: float) -> None:
        return None

    inner = OpenAIClient(http, base_url=fake.openai_base, api_key="k", timeout=10)
    model = RetryingClient(inner, RetryPolicy(max_attempts=2), sleep=no_sleep)
    return ChatService(store=open_store(engine), model=model, options=ServiceOptions(
        model="qwen-plus", profiles={"default": PROFILE},
        memory=memory or MemoryOptions()))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


_n = 0


async def say(service: ChatService, text: str) -> list[ReplyEvent]:
    global _n
    _n += 1
    req = ChatRequest(platform="console", scope=SCOPE, author=Author("u1", "Ann"), text=text,
                      event_id=f"m{_n}")
    return [e async for e in service.handle(req)]


def summary_requests(fake: FakeModelServer) -> list[dict[str, object]]:
    return [r.json for r in fake.requests if isinstance(r.json, dict)
            and is_summary_request(r.json)]


def turn_requests(fake: FakeModelServer) -> list[dict[str, object]]:
    return [r.json for r in fake.requests if isinstance(r.json, dict)
            and r.path.endswith("/chat/completions") and not is_summary_request(r.json)]


def system_text(body: dict[str, object]) -> str:
    first = body["messages"][0]  # type: ignore[index]
    content = first["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


async def test_old_messages_reach_the_model_through_the_summary(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    service = make_service(engine, http, fake_model)
    await say(service, "FACT: my locker code is 4711")
    for i in range(12):
        events = await say(service, f"small talk {i}")
        assert isinstance(events[-1], FinalEvent)
        await service.memory.wait()
    assert summary_requests(fake_model), "a summary was written"
    first = summary_requests(fake_model)[0]
    assert first["model"] == "qwen-flash"  # summary_model
    await say(service, "What is my locker code?")
    last = turn_requests(fake_model)[-1]
    sent = [m for m in last["messages"]]  # type: ignore[union-attr]
    # The fact is no longer among the messages, only in the summary (system message).
    assert "FACT: my locker code is 4711" in system_text(last)
    assert not any("4711" in str(m["content"]) for m in sent[1:])
    assert len(sent) <= 1 + PROFILE.max_context_messages
    # Incremental: a later summary request starts from the earlier summary.
    later = summary_requests(fake_model)[-1]
    user = later["messages"][1]["content"]  # type: ignore[index]
    assert "Summary so far:\nFACT: my locker code is 4711" in user
    # /summary shows it; a restarted service (a new store) uses it too.
    assert "FACT: my locker code is 4711" in await service.summary(platform="console",
                                                                 scope=SCOPE)
    fresh = make_service(engine, http, fake_model)
    await say(fresh, "again?")
    assert "4711" in system_text(turn_requests(fake_model)[-1])


async def test_a_turn_never_waits_for_the_summary(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    service = make_service(engine, http, fake_model)
    for i in range(3):
        await say(service, f"FACT: number {i}")
    fake_model.summary_replies.append(Reply(kind="hang"))  # the summariser's call hangs
    await say(service, "turn that starts the summary")
    await asyncio.sleep(0)
    assert service.memory._tasks, "a summary is running"
    # While it hangs, turns are answered (from the last finished summary: none yet).
    for i in range(3):
        events = await say(service, f"more {i}")
        assert isinstance(events[-1], FinalEvent)
    assert service.memory._tasks
    await service.memory.stop()


async def test_a_failed_summary_is_retried_later_and_never_shown(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    service = make_service(engine, http, fake_model,
                           MemoryOptions(retry_seconds=(3600.0,)))
    fake_model.summary_replies.extend([Reply(kind="error", status=500)] * 2)  # both attempts
    await say(service, "FACT: the cat is called Tom")
    for i in range(4):
        events = await say(service, f"chat {i}")
        assert not any(isinstance(e, ErrorEvent) for e in events)
        await service.memory.wait()
    assert len(summary_requests(fake_model)) == 2  # one call, retried once by the client
    async with engine.connect() as conn:
        row = (await conn.execute(select(ConversationMemory))).one()
    assert row.attempts == 1 and row.retry_at is not None and not row.summary
    # Not due yet: later turns do not call again.
    await say(service, "chat again")
    await service.memory.wait()
    assert len(summary_requests(fake_model)) == 2
    # Once due, the next turn writes it.
    async with engine.begin() as conn:
        await conn.execute(update(ConversationMemory).values(retry_at=None))
    await say(service, "and again")
    await service.memory.wait()
    assert "FACT: the cat is called Tom" in await service.summary(platform="console",
                                                                  scope=SCOPE)


async def test_one_summariser_per_conversation_across_replicas(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    one = make_service(engine, http, fake_model)
    two = make_service(engine, http, fake_model)  # another replica: its own store and owner
    await say(one, "FACT: first")
    await say(one, "second")
    fake_model.summary_replies.append(Reply(kind="ok", text="FACT: first", delay=1.0))
    compacting = asyncio.create_task(one.compact(platform="console", scope=SCOPE,
                                                 profile=None))
    for _ in range(1000):  # until the first replica's summary call reaches the model
        if summary_requests(fake_model):
            break
        await asyncio.sleep(0.01)
    answer = await two.compact(platform="console", scope=SCOPE, profile=None)
    assert "being written right now" in answer
    assert "Compacted" in await compacting
    assert len(summary_requests(fake_model)) == 1


async def test_compact_folds_everything_and_summary_shows_it(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    service = make_service(engine, http, fake_model)
    assert "No summary yet" in await service.summary(platform="console", scope=SCOPE)
    assert "empty" in await service.compact(platform="console", scope=SCOPE, profile=None)
    await say(service, "FACT: the meeting is on Friday")
    await say(service, "ok")
    assert "Compacted" in await service.compact(platform="console", scope=SCOPE, profile=None)
    assert "Nothing new" in await service.compact(platform="console", scope=SCOPE,
                                                  profile=None)
    await say(service, "when is the meeting?")
    last = turn_requests(fake_model)[-1]
    assert "FACT: the meeting is on Friday" in system_text(last)
    assert [m["role"] for m in last["messages"]] == ["system", "user"]  # type: ignore[index]


async def test_a_summariser_that_died_is_replaced_after_its_lease(
        engine: AsyncEngine, http: aiohttp.ClientSession, fake_model: FakeModelServer) -> None:
    from core.store import summaries as sql

    service = make_service(engine, http, fake_model)
    await say(service, "FACT: the door code is 1234")
    conversation = await service.memory.conversation(platform="console", scope=SCOPE)
    assert conversation is not None
    store = open_store(engine)  # a replica that claims the conversation, then dies
    claimed = await store.run(lambda c: sql.claim(c, store.upsert, conversation,
                                                  owner="dead", lease_seconds=0.2),
                              "claim")
    assert claimed is not None
    assert "being written" in await service.compact(platform="console", scope=SCOPE,
                                                    profile=None)
    await asyncio.sleep(0.3)
    assert "Compacted" in await service.compact(platform="console", scope=SCOPE, profile=None)
    # The dead replica's late result is refused: the claim is no longer its own.
    assert not await store.run(lambda c: sql.save(
        c, claimed=claimed, summary="stale", tokens=1, covers=1, model="m",
        lease_seconds=1), "save")
    assert "FACT: the door code is 1234" in await service.summary(platform="console",
                                                                  scope=SCOPE)
