"""The relay ledger (core.relays) on SQLite and a real PostgreSQL: one claimer per relay
across replicas, taken over only after the lease, and staff replies to relayed messages
matched to their handoff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.handoff import Handoffs
from core.relays import Relays
from core.store import Store


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Store]:
    store = open_store(engine)
    try:
        yield store
    finally:
        store.close()


async def test_one_claim_per_relay_and_a_takeover_after_the_lease(
        engine: AsyncEngine, store: Store) -> None:
    other = open_store(engine)  # a second replica's store on the same database
    try:
        a, b = Relays(store, owner="a"), Relays(other, owner="b")
        target = {"channel": "C0STAFF", "thread_ts": "1.1"}
        claims = await asyncio.gather(*(
            r.claim(platform="slack", key="ev1/relay", target=target, text="hi", lease=0.5)
            for r in (a, b, a, b)))
        won = [c for c in claims if c is not None]
        assert len(won) == 1 and won[0].attempts == 1 and won[0].target == target
        assert await a.expired() == []  # the lease still runs: nobody takes it
        await asyncio.sleep(0.7)
        # The claimer died: the lease ran out, and one replica takes it over.
        assert await b.expired() == [won[0].id]
        taken = await asyncio.gather(b.retake(won[0].id, 30), a.retake(won[0].id, 30))
        again = [t for t in taken if t is not None]
        assert len(again) == 1 and again[0].attempts == 2 and again[0].text == "hi"
        assert await a.claim(platform="slack", key="ev1/relay", target=target, text="hi",
                             lease=30) is None
        await b.finish(won[0].id, status="sent", ref="C0STAFF/1.2")
        assert await a.status(platform="slack", key="ev1/relay") == "sent"
        assert await a.expired() == []
        # The same key on the other platform is another relay.
        assert await a.claim(platform="telegram", key="ev1/relay", target={}, text="x",
                             lease=30) is not None
    finally:
        other.close()


async def test_a_reply_to_a_relayed_message_finds_its_handoff(store: Store) -> None:
    handoffs, relays = Handoffs(store), Relays(store, owner="a")
    handoff, _ = await handoffs.start(platform="slack", scope="T/D1", staff="telegram:-100",
                                      reason="asked")
    await handoffs.set_notice(handoff.id, "-100/7")
    relay = await relays.claim(platform="telegram", key="ev2/relay", target={"chat_id": -100},
                               text="Ann: where is it?", lease=30, handoff_id=handoff.id)
    assert relay is not None
    await relays.finish(relay.id, status="sent", ref="-100/9")
    assert (found := await handoffs.by_ref("-100/9")) is not None and found.id == handoff.id
    assert (await handoffs.by_ref("-100/7")) is not None  # the notice itself
    assert await handoffs.by_ref("-100/8") is None
    await handoffs.release(handoff.id, by="staff")
    assert await handoffs.by_ref("-100/9") is None  # released: no longer relayed
