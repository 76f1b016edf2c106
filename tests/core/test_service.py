"""ChatService end to end: real store (SQLite and PostgreSQL), real aiohttp, loopback model."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.model import OpenAIClient, RetryingClient, RetryPolicy
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.models import Message
from core.types import (
    Author,
    ChatRequest,
    DeltaEvent,
    DuplicateEvent,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
    ThinkingEvent,
)
from tests.fakes.model_server import FakeModelServer, Reply


@pytest.fixture
async def service(engine: AsyncEngine, fake_model: FakeModelServer) -> AsyncIterator[ChatService]:
    async with aiohttp.ClientSession() as http:
        inner = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)

        async def no_sleep(_: float) -> None:
            return None

        model = RetryingClient(inner, RetryPolicy(max_attempts=2), sleep=no_sleep)
        profile = Profile(system_prompt="You are terse.", image_turns=2)
        yield ChatService(store=open_store(engine), model=model,
                          options=ServiceOptions(model="qwen-plus",
                                                 profiles={"default": profile}))


_n = 0


def request(text: str, *, event: str | None = None, images: tuple[bytes, ...] = ()) -> ChatRequest:
    global _n
    _n += 1
    return ChatRequest(platform="console", scope="console/t", author=Author("u1", "Ann"),
                       text=text, event_id=event or f"e{_n}", images=images)


async def run(service: ChatService, req: ChatRequest) -> list[ReplyEvent]:
    return [e async for e in service.handle(req)]


def png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (40, 30), color).save(buf, "PNG")
    return buf.getvalue()


async def test_turn_streams_and_remembers(service: ChatService,
                                          fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="Paris is the capital.", reasoning="secret thoughts"))
    events = await run(service, request("Capital of France?"))
    assert isinstance(events[0], StatusEvent)
    deltas = "".join(e.text for e in events if isinstance(e, DeltaEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert deltas == final.text == "Paris is the capital."
    assert final.usage.total_tokens == 18
    await run(service, request("And of Italy?"))
    sent = fake_model.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You are terse."
    assert sent[2]["content"] == "Paris is the capital."  # reasoning is not the answer
    assert not [e for e in events if isinstance(e, ThinkingEvent)]  # not asked for


async def test_show_thinking_yields_the_reasoning_apart(
        engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=5)
        profile = Profile(show_thinking=True)
        service = ChatService(store=open_store(engine), model=model,
                              options=ServiceOptions(model="qwen-plus",
                                                     profiles={"default": profile}))
        fake_model.enqueue(Reply(text="Paris.", reasoning="France's capital is Paris."))
        events = await run(service, request("Capital of France?"))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingEvent))
    assert thinking == "France's capital is Paris."
    first_delta = next(i for i, e in enumerate(events) if isinstance(e, DeltaEvent))
    assert all(i < first_delta for i, e in enumerate(events) if isinstance(e, ThinkingEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.text == "Paris."


async def test_redelivered_event_answered_once(service: ChatService,
                                               fake_model: FakeModelServer) -> None:
    first = await run(service, request("hello", event="same"))
    again = await run(service, request("hello", event="same"))
    assert isinstance(first[-1], FinalEvent)
    assert again == [DuplicateEvent("same")]
    assert len(fake_model.requests) == 1


async def test_failed_turn_is_stored_and_conversation_continues(
    service: ChatService, fake_model: FakeModelServer, engine: AsyncEngine
) -> None:
    fake_model.enqueue(Reply(kind="error", status=401))
    events = await run(service, request("first question"))
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "auth"
    assert "API key" in error.message
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Message.role, Message.status, Message.text)
                                   .order_by(Message.id))).all()
    assert [(r.role, r.status) for r in rows] == [("user", "ok"), ("assistant", "failed")]
    fake_model.enqueue(Reply(text="now fine"))
    events = await run(service, request("second"))
    assert isinstance(events[-1], FinalEvent)
    sent = [m["content"] for m in fake_model.requests[-1].json["messages"]]
    assert sent == ["You are terse.", "first question", "second"]


async def test_retries_then_answers(service: ChatService, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=503), Reply(text="after retry"))
    events = await run(service, request("hi"))
    assert isinstance(events[-1], FinalEvent) and events[-1].text == "after retry"


async def test_dropped_stream_is_partial(service: ChatService, fake_model: FakeModelServer,
                                         engine: AsyncEngine) -> None:
    fake_model.enqueue(Reply(kind="drop", text="abcdefghij" * 4))
    final = (await run(service, request("long answer please")))[-1]
    assert isinstance(final, FinalEvent) and final.partial and final.notice
    assert final.text == "abcdefghij" * 2
    async with engine.connect() as conn:
        status = await conn.scalar(select(Message.status).where(Message.role == "assistant"))
    assert status == "partial"


async def test_moderation_is_a_polite_refusal(service: ChatService,
                                              fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="error", status=400))
    error = (await run(service, request("something bad")))[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "refused"
    assert error.message.startswith("Sorry")


@pytest.mark.parametrize("text", ["", "   ", "x" * 40_000])
async def test_bad_text_is_refused_before_the_model(service: ChatService,
                                                    fake_model: FakeModelServer,
                                                    text: str) -> None:
    error = (await run(service, request(text)))[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "bad_input"
    assert fake_model.requests == []


async def test_corrupt_image_is_reported_and_text_kept(service: ChatService,
                                                       fake_model: FakeModelServer,
                                                       engine: AsyncEngine) -> None:
    error = (await run(service, request("look", images=(b"not an image",))))[-1]
    assert isinstance(error, ErrorEvent) and error.kind == "bad_image"
    assert fake_model.requests == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(Message.text).where(Message.role == "user")) == "look"


async def test_only_recent_images_reach_the_model(service: ChatService,
                                                  fake_model: FakeModelServer) -> None:
    for color in ("red", "green", "blue"):
        await run(service, request(f"picture {color}", images=(png(color),)))
    sent = fake_model.requests[-1].json["messages"]
    users = [m for m in sent if m["role"] == "user"]
    assert isinstance(users[0]["content"], str) and "earlier image" in users[0]["content"]
    for m in users[1:]:
        assert m["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_shared_conversations_name_the_authors(service: ChatService,
                                                     fake_model: FakeModelServer) -> None:
    req = ChatRequest(platform="slack", scope="T/C/1", author=Author("U1", "Ann"), text="hi all",
                      event_id="s1", shared=True)
    await run(service, req)
    assert fake_model.requests[-1].json["messages"][-1]["content"] == "Ann: hi all"


async def test_feedback_on_a_posted_reply(service: ChatService, engine: AsyncEngine) -> None:
    await run(service, request("rate me", event="fb1"))
    await service.record_reply(platform="console", event_id="fb1", ref="C1/123.456")
    assert await service.record_feedback(platform="console", ref="C1/123.456", user_id="U9",
                                         positive=True)
    assert await service.record_feedback(platform="console", ref="C1/123.456", user_id="U9",
                                         positive=False)  # a change of mind replaces it
    assert not await service.record_feedback(platform="console", ref="nowhere", user_id="U9",
                                             positive=True)
    from core.store.models import Feedback

    async with engine.connect() as conn:
        rows = (await conn.execute(select(Feedback.value, Feedback.user_id))).all()
    assert [(r.value, r.user_id) for r in rows] == [("down", "U9")]


async def test_model_choice_survives_reset(engine: AsyncEngine,
                                           fake_model: FakeModelServer) -> None:
    from core.errors import InputError

    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key=None, timeout=5)
        svc = ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen3.5-plus", model_choices=("qwen3.5-plus", "qwen-flash")))
        with pytest.raises(InputError):
            await svc.choose_model(platform="console", scope="console/t", model="gpt-9")
        await svc.choose_model(platform="console", scope="console/t", model="qwen-flash")
        await svc.reset(platform="console", scope="console/t")
        assert await svc.current_model(platform="console", scope="console/t",
                                       profile=None) == "qwen-flash"
        await run(svc, request("which model?"))
        assert fake_model.requests[-1].json["model"] == "qwen-flash"


async def test_overlapping_turns_keep_question_answer_order(service: ChatService,
                                                            fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="answer A", delay=0.3), Reply(text="answer B"),
                       Reply(text="answer C"))
    first = asyncio.create_task(run(service, request("question A")))
    await asyncio.sleep(0.1)  # A's turn is running; B is recorded and waits
    second = await run(service, request("question B"))
    await first
    assert isinstance(second[-1], FinalEvent) and second[-1].text == "answer B"
    sent = [m["content"] for m in fake_model.requests[1].json["messages"]][1:]
    assert sent == ["question A", "answer A", "question B"]
    await run(service, request("question C"))
    sent = [m["content"] for m in fake_model.requests[2].json["messages"]][1:]
    assert sent == ["question A", "answer A", "question B", "answer B", "question C"]


async def test_images_only_from_the_recent_user_turns(service: ChatService,
                                                      fake_model: FakeModelServer) -> None:
    await run(service, request("a picture", images=(png(),)))
    for i in range(2):  # the profile sends images of the last 2 user turns
        await run(service, request(f"text {i}"))
    sent = fake_model.requests[-1].json["messages"]
    assert all(isinstance(m["content"], str) for m in sent)
    assert "earlier image" in sent[1]["content"]


@pytest.mark.parametrize(("reply", "kind"), [
    (Reply(text=""), "empty"),
    (Reply(text="blocked", finish_reason="content_filter"), "refused"),
])
async def test_no_usable_answer_is_an_error(service: ChatService, fake_model: FakeModelServer,
                                            reply: Reply, kind: str) -> None:
    fake_model.enqueue(reply)
    last = (await run(service, request("hello")))[-1]
    assert isinstance(last, ErrorEvent) and last.kind == kind


async def test_cancelled_turn_is_closed_not_left_open(service: ChatService,
                                                      fake_model: FakeModelServer,
                                                      engine: AsyncEngine) -> None:
    from core.store.models import InboundEvent

    fake_model.enqueue(Reply(text="slow", delay=2))
    task = asyncio.create_task(run(service, request("wait for it", event="cancel-me")))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with engine.connect() as conn:
        status = await conn.scalar(select(InboundEvent.status)
                                   .where(InboundEvent.event_id == "cancel-me"))
        error = await conn.scalar(select(Message.error).where(Message.role == "assistant"))
    assert (status, error) == ("failed", "interrupted")


async def _limited_service(engine: AsyncEngine, fake_model: FakeModelServer,
                           http: aiohttp.ClientSession, **limits: int) -> ChatService:
    from core.limits import Limits

    model = OpenAIClient(http, base_url=fake_model.openai_base, api_key=None, timeout=5)
    return ChatService(store=open_store(engine), model=model,
                       options=ServiceOptions(model="qwen-plus", limits=Limits(**limits)))


async def test_turn_rate_limit(engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    async with aiohttp.ClientSession() as http:
        svc = await _limited_service(engine, fake_model, http, user_turns_per_minute=2)
        results = [(await run(svc, request(f"m{i}")))[-1] for i in range(3)]
    assert [type(r).__name__ for r in results] == ["FinalEvent", "FinalEvent", "ErrorEvent"]
    assert isinstance(results[2], ErrorEvent) and results[2].kind == "limited"
    assert "2 messages a minute" in results[2].message
    assert len(fake_model.requests) == 2
    async with engine.connect() as conn:  # the refused message is kept all the same
        texts = (await conn.execute(select(Message.text).where(Message.role == "user"))).all()
    assert [t.text for t in texts] == ["m0", "m1", "m2"]


async def test_daily_token_quota(engine: AsyncEngine, fake_model: FakeModelServer) -> None:
    async with aiohttp.ClientSession() as http:
        svc = await _limited_service(engine, fake_model, http, user_tokens_per_day=20)
        results = [(await run(svc, request(f"m{i}")))[-1] for i in range(3)]
    assert [type(r).__name__ for r in results] == ["FinalEvent", "FinalEvent", "ErrorEvent"]
    assert isinstance(results[2], ErrorEvent) and "20 tokens a day" in results[2].message
    assert "UTC" in results[2].message
