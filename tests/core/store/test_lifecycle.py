"""prune, forget and retention on SQLite and PostgreSQL, while turns keep being answered."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from bots.lifecycle import retention_job
from core.limits import Limits
from core.model import OpenAIClient
from core.profiles import Profile
from core.service import ChatService, ServiceOptions
from core.store.lifecycle import forget, prune
from core.store.models import (
    Attachment,
    ConversationMemory,
    Feedback,
    InboundEvent,
    Message,
    UsageCounter,
)
from core.types import Author, ChatRequest, FinalEvent
from tests.fakes.model_server import FakeModelServer

ALICE, BOB = Author("UA", "Alice"), Author("UB", "Bob")
_n = 0


@pytest.fixture
async def service(engine: AsyncEngine, fake_model: FakeModelServer
                  ) -> AsyncIterator[ChatService]:
    async with aiohttp.ClientSession() as http:
        model = OpenAIClient(http, base_url=fake_model.openai_base, api_key="k", timeout=10)
        profiles = {"default": Profile(), "short": Profile(name="short", retention_days=30)}
        yield ChatService(store=open_store(engine), model=model, options=ServiceOptions(
            model="qwen-plus", profiles=profiles, limits=Limits(user_turns_per_day=1000)))


def png() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (30, 20), "blue").save(buf, "PNG")
    return buf.getvalue()


async def say(service: ChatService, who: Author, scope: str, text: str, *,
              images: tuple[bytes, ...] = (), profile: str | None = None) -> FinalEvent:
    global _n
    _n += 1
    req = ChatRequest(platform="slack", scope=scope, author=who, text=text,
                      event_id=f"ev{_n}", images=images, profile=profile, shared=True)
    events = [e async for e in service.handle(req)]
    assert isinstance(events[-1], FinalEvent), events[-1]
    return events[-1]


async def age(engine: AsyncEngine, days: int) -> None:
    """Make every message and event stored so far ``days`` old."""
    then = datetime.now(UTC) - timedelta(days=days)
    async with engine.begin() as conn:
        await conn.execute(update(Message).values(created_at=then))
        await conn.execute(update(InboundEvent).values(finished_at=then, received_at=then))
        await conn.execute(update(Attachment).values(created_at=then))


async def count(engine: AsyncEngine, table: type, *where: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(
            *where)) or 0)  # type: ignore[arg-type]


async def texts(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(await conn.scalars(select(Message.text).where(Message.role == "user")
                                       .order_by(Message.id)))


async def test_prune_under_concurrent_turns(engine: AsyncEngine, service: ChatService) -> None:
    await say(service, ALICE, "T/C1/1", "old picture", images=(png(),))
    await say(service, BOB, "T/C1/2", "old words")
    await age(engine, 100)
    assert await count(engine, Attachment) == 1

    async def chat(who: Author, scope: str) -> None:
        for i in range(8):
            await say(service, who, scope, f"new {who.name} {i}")

    dry = await prune(open_store(engine), before=datetime.now(UTC) - timedelta(days=90),
                      dry_run=True)
    assert dry.counts["messages"] == 4 and "would delete 4 messages" in dry.lines()
    assert await count(engine, Message) == 4  # a dry run deletes nothing
    other = open_store(engine)  # `chatbridge prune` is another process: its own store
    turns = asyncio.gather(chat(ALICE, "T/C1/1"), chat(BOB, "T/C1/2"))
    removed = await prune(other, before=datetime.now(UTC) - timedelta(days=90))
    await turns
    assert removed.counts["messages"] == 4 and removed.counts["attachments"] == 1
    assert removed.counts["inbound events"] >= 2
    left = await texts(engine)
    assert "old picture" not in left and "old words" not in left
    assert len([t for t in left if t.startswith("new")]) == 16
    assert await count(engine, Attachment) == 0
    # The conversation goes on without the pruned messages, also from a cached window.
    await say(service, ALICE, "T/C1/1", "still there?")


async def test_forget_one_person_under_concurrent_turns(
        engine: AsyncEngine, service: ChatService, fake_model: FakeModelServer) -> None:
    await say(service, ALICE, "T/C1/9", "alice secret 1", images=(png(),))
    await say(service, BOB, "T/C1/9", "bob public 1")
    await say(service, ALICE, "T/D1", "alice secret 2")
    await service.record_reply(platform="slack", event_id=f"ev{_n - 2}", ref="C1/1.1")
    await service.record_feedback(platform="slack", ref="C1/1.1", user_id="UA", positive=True)
    await service.compact(platform="slack", scope="T/C1/9", profile=None)
    assert await count(engine, ConversationMemory, ConversationMemory.summary != "") == 1
    assert await count(engine, UsageCounter, UsageCounter.subject == "user:UA") > 0

    async def bob() -> None:
        for i in range(8):
            await say(service, BOB, "T/C1/9", f"bob more {i}")

    turns = asyncio.create_task(bob())
    removed = await forget(open_store(engine), platform="slack", user_id="UA")
    await turns
    assert removed.counts["messages"] == 4  # two questions and their two answers
    assert removed.counts["attachments"] == 1 and removed.counts["summaries"] == 1
    assert removed.counts["feedback"] == 1 and removed.counts["usage rows"] > 0
    left = await texts(engine)
    assert not [t for t in left if "alice" in t]
    assert "bob public 1" in left and len([t for t in left if "bob more" in t]) == 8
    assert await count(engine, Feedback) == 0
    assert await count(engine, UsageCounter, UsageCounter.subject == "user:UA") == 0
    # The next turn's context holds nothing of hers (the SQLite window cache was dropped).
    await say(service, BOB, "T/C1/9", "what did alice say?")
    sent = str(fake_model.requests[-1].json["messages"])
    assert "alice secret" not in sent and "bob public 1" in sent


async def test_retention_job_prunes_each_profile_by_its_days(
        engine: AsyncEngine, service: ChatService) -> None:
    await say(service, ALICE, "T/short", "kept 30 days", profile="short")
    await say(service, ALICE, "T/default", "kept forever")
    await age(engine, 40)
    store = open_store(engine)
    job = asyncio.create_task(retention_job(store, service._options.profiles, interval=0.05))
    try:
        for _ in range(200):
            if "kept 30 days" not in await texts(engine):
                break
            await asyncio.sleep(0.05)
    finally:
        job.cancel()
    assert await texts(engine) == ["kept forever"]
