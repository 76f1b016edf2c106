"""The store on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.store import ContextLimits, Store
from core.store.models import Attachment, Conversation, InboundEvent, Message
from core.types import Author, Image, Usage

ALICE = Author("U1", "Alice")


def image(seed: bytes) -> Image:
    return Image(data=seed * 10, mime="image/png", width=20, height=20,
                 sha256=hashlib.sha256(seed * 10).hexdigest())


async def turn(store: Store, event: str, text: str = "hi", scope: str = "console/a",
               images: tuple[Image, ...] = ()) -> int:
    start = await store.begin_turn(platform="console", scope=scope, event_id=event,
                                   profile="default", author=ALICE, text=text,
                                   token_count=5, images=images)
    assert start is not None
    await store.finish_turn(start, event_id=event, platform="console", text=f"re: {text}",
                            token_count=5, status="ok", model="m", usage=Usage(3, 2),
                            latency_ms=7)
    return start.conversation_id


async def test_redelivered_event_is_recorded_once(engine: AsyncEngine) -> None:
    store = open_store(engine)
    await turn(store, "ev1")
    again = await store.begin_turn(platform="console", scope="console/a", event_id="ev1",
                                   profile=None, author=ALICE, text="hi", token_count=1)
    assert again is None
    async with engine.connect() as conn:
        assert len((await conn.execute(select(InboundEvent))).all()) == 1
        assert len((await conn.execute(select(Message))).all()) == 2


async def test_messages_round_trip_with_usage(engine: AsyncEngine) -> None:
    store = open_store(engine)
    conv = await turn(store, "ev1", "hello")
    history = await store.load_context(conv, ContextLimits(1000, 50, 3))
    assert [(m.role, m.text) for m in history] == [("user", "hello"), ("assistant", "re: hello")]
    async with engine.connect() as conn:
        row = (await conn.execute(select(Message).where(Message.role == "assistant"))).one()
        assert (row.prompt_tokens, row.completion_tokens, row.latency_ms) == (3, 2, 7)
        assert row.status == "ok"
        user = (await conn.execute(select(Message).where(Message.role == "user"))).one()
        assert (user.author_id, user.author_name) == ("U1", "Alice")


async def test_reset_keeps_old_conversation(engine: AsyncEngine) -> None:
    store = open_store(engine)
    first = await turn(store, "ev1")
    assert await store.reset(platform="console", scope="console/a")
    second = await turn(store, "ev2")
    assert second != first
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Conversation.id, Conversation.status)
                                   .order_by(Conversation.id))).all()
    assert [r.status for r in rows] == ["closed", "open"]
    history = await store.load_context(second, ContextLimits(1000, 50, 3))
    assert len(history) == 2


async def test_context_is_bounded_by_budget_and_count(engine: AsyncEngine) -> None:
    store = open_store(engine)
    conv = 0
    for i in range(30):
        conv = await turn(store, f"ev{i}", f"m{i}")
    history = await store.load_context(conv, ContextLimits(50, 100, 3))
    assert len(history) == 10  # 10 messages of 5 tokens
    assert history[-1].text == "re: m29"
    assert history[0].text == "m25"
    capped = await store.load_context(conv, ContextLimits(10_000, 7, 3))
    assert len(capped) == 7


async def test_failed_turn_keeps_user_message(engine: AsyncEngine) -> None:
    store = open_store(engine)
    start = await store.begin_turn(platform="console", scope="console/a", event_id="e",
                                   profile=None, author=ALICE, text="question", token_count=3)
    assert start is not None
    await store.finish_turn(start, event_id="e", platform="console", text="", token_count=0,
                            status="failed", error="unavailable: HTTP 503")
    history = await store.load_context(start.conversation_id, ContextLimits(100, 10, 3))
    assert [m.text for m in history] == ["question"]
    async with engine.connect() as conn:
        evt = (await conn.execute(select(InboundEvent))).one()
        failed = (await conn.execute(select(Message).where(Message.status == "failed"))).one()
    assert evt.status == "failed"
    assert failed.error == "unavailable: HTTP 503"


async def test_images_stored_once_and_only_recent_loaded(engine: AsyncEngine) -> None:
    store = open_store(engine)
    same = image(b"a")
    conv = await turn(store, "e1", "one", images=(same,))
    await turn(store, "e2", "two", images=(same, image(b"b")))
    await turn(store, "e3", "three", images=(image(b"c"),))
    async with engine.connect() as conn:
        assert len((await conn.execute(select(Attachment))).all()) == 3
    history = await store.load_context(conv, ContextLimits(1000, 50, 2))
    users = [m for m in history if m.role == "user"]
    assert [len(m.images) for m in users] == [0, 2, 1]
    assert [m.image_count for m in users] == [1, 2, 1]
    assert users[1].images[0].data == same.data
    assert [i.sha256 for i in users[1].images] == [same.sha256, image(b"b").sha256]


async def test_concurrent_first_messages_share_one_conversation(engine: AsyncEngine) -> None:
    store = open_store(engine)
    starts = await asyncio.gather(*[
        store.begin_turn(platform="console", scope="console/race", event_id=f"r{i}",
                         profile=None, author=ALICE, text="x", token_count=1)
        for i in range(8)
    ])
    assert len({s.conversation_id for s in starts if s}) == 1


async def test_many_new_conversations(engine: AsyncEngine) -> None:
    # PostgreSQL switches a prepared statement to a generic plan after five runs; the
    # ON CONFLICT target of the partial index must still be inferred then.
    store = open_store(engine)
    ids = [await turn(store, f"ev{i}", scope=f"console/{i}") for i in range(12)]
    assert len(set(ids)) == 12


async def test_context_in_the_same_transaction(engine: AsyncEngine) -> None:
    store = open_store(engine)
    await turn(store, "ev1", "first")
    start = await store.begin_turn(platform="console", scope="console/a", event_id="ev2",
                                   profile=None, author=ALICE, text="second", token_count=5,
                                   context=ContextLimits(1000, 50, 3))
    assert start is not None and start.history is not None
    assert [m.text for m in start.history] == ["first", "re: first", "second"]


async def test_sqlite_lock_held_elsewhere_waits_off_the_event_loop(sqlite_url: str) -> None:
    import sqlite3

    from bots.db import create_engine, upgrade

    engine = create_engine(sqlite_url)
    await upgrade(engine)
    store = open_store(engine)
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock on the file
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    write = asyncio.create_task(turn(store, "locked"))
    await asyncio.sleep(0.3)
    assert not write.done()
    assert ticks >= 10  # the loop kept running while the write waited
    other.execute("ROLLBACK")
    await asyncio.wait_for(write, 5)
    tick_task.cancel()
    other.close()
    store.close()
    await engine.dispose()


async def test_usage_by_user_conversation_model(engine: AsyncEngine) -> None:
    from datetime import UTC, datetime, timedelta

    store = open_store(engine)
    await turn(store, "u1", scope="console/a")
    await turn(store, "u2", scope="console/b")
    since = datetime.now(UTC) - timedelta(hours=1)
    by_user = await store.usage(since=since, by="user")
    assert [(r.key, r.turns, r.prompt_tokens, r.completion_tokens) for r in by_user] == [
        ("Alice", 2, 6, 4)]
    by_conv = await store.usage(since=since, by="conversation")
    assert sorted(r.key for r in by_conv) == ["console:console/a", "console:console/b"]
    assert [r.key for r in await store.usage(since=since, by="model")] == ["m"]
    assert await store.usage(since=datetime.now(UTC) + timedelta(hours=1), by="model") == []


async def test_scope_known_survives_a_reset(engine: AsyncEngine) -> None:
    store = open_store(engine)
    assert not await store.scope_known(platform="console", scope="console/a")
    await turn(store, "ev1")
    assert await store.scope_known(platform="console", scope="console/a")
    assert await store.reset(platform="console", scope="console/a")
    assert await store.count_messages(platform="console", scope="console/a") == 0
    assert await store.scope_known(platform="console", scope="console/a")  # closed counts
    assert not await store.scope_known(platform="console", scope="console/b")
    assert not await store.scope_known(platform="slack", scope="console/a")


async def test_record_event_is_true_once(engine: AsyncEngine) -> None:
    store = open_store(engine)
    assert await store.record_event(platform="slack", event_id="T/D/1.0/started")
    assert not await store.record_event(platform="slack", event_id="T/D/1.0/started")
    assert await store.record_event(platform="console", event_id="T/D/1.0/started")
    results = await asyncio.gather(*[store.record_event(platform="slack", event_id="race")
                                     for _ in range(5)])
    assert sorted(results) == [False] * 4 + [True]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(InboundEvent.status, InboundEvent.finished_at)
                                   .where(InboundEvent.event_id == "race"))).all()
    assert len(rows) == 1 and rows[0].status == "done" and rows[0].finished_at is not None


async def test_pending_events_counts_turns_not_finished(engine: AsyncEngine) -> None:
    store = open_store(engine)
    await store.ping()
    assert await store.pending_events() == 0
    start = await store.begin_turn(platform="slack", scope="T/C/1.0", event_id="ev1",
                                   profile="default", author=ALICE, text="hi", token_count=2)
    assert start is not None
    await store.begin_turn(platform="telegram", scope="1/2", event_id="ev1",
                           profile="default", author=ALICE, text="hi", token_count=2)
    await store.record_event(platform="slack", event_id="greeting")  # no turn: done at once
    assert await store.pending_events() == 2
    await store.finish_turn(start, event_id="ev1", platform="slack", text="re: hi",
                            token_count=3, status="ok", model="m", usage=Usage(2, 3),
                            latency_ms=5)
    assert await store.pending_events() == 1
