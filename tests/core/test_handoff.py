"""Handoffs in SQL (core.handoff) on SQLite and a real PostgreSQL, and their settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import open_store
from core.context import build_messages
from core.errors import ConfigError
from core.handoff import Handoffs, parse_handoff, wants_human
from core.profiles import Profile
from core.store import ContextLimits, Store, TurnPart
from core.store.models import utcnow
from core.types import Author


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Store]:
    store = open_store(engine)
    try:
        yield store
    finally:
        store.close()


async def test_one_open_handoff_per_key_across_replicas(engine: AsyncEngine,
                                                         store: Store) -> None:
    other = open_store(engine)  # a second replica's store on the same database
    try:
        a, b = Handoffs(store), Handoffs(other)
        results = await asyncio.gather(*(
            h.start(platform="telegram", scope="tg/1", staff="slack:C0STAFF",
                    reason="wants a refund", trigger="tool", profile="shop",
                    customer={"chat_id": 1})
            for h in (a, b, a, b)))
        assert sum(made for _, made in results) == 1
        assert len({r.id for r, _ in results}) == 1
        found = await b.active(platform="telegram", scope="tg/1")
        assert found is not None and found.reason == "wants a refund"
        assert found.customer == {"chat_id": 1}
        await a.set_notice(found.id, "C0STAFF/1700000000.000100")
        assert (await b.by_notice("C0STAFF/1700000000.000100")) is not None
        assert [h.id for h in await b.open_handoffs()] == [found.id]
        # Released once: the second release (another replica, a double click) is a no-op.
        assert await a.release(found.id, by="U_STAFF") is True
        assert await b.release(found.id, by="U_STAFF") is False
        assert await a.active(platform="telegram", scope="tg/1") is None
        assert await a.by_notice("C0STAFF/1700000000.000100") is None
        # A new handoff may open after the release.
        _, made = await b.start(platform="telegram", scope="tg/1", staff="slack:C0STAFF",
                                reason="again")
        assert made
    finally:
        other.close()


async def test_staff_messages_stored_once_and_seen_by_the_model(store: Store) -> None:
    start = await store.begin_turn(
        platform="telegram", scope="tg/2", profile="shop", queued=False,
        parts=[TurnPart("e1", Author("7", "Carol"), "I want a human", 4, ())], fence=None,
        context=None)
    assert start is not None
    handoffs = Handoffs(store)
    handoff, _ = await handoffs.start(platform="telegram", scope="tg/2",
                                      staff="slack:C0STAFF", reason="asked", trigger="phrase")
    for _ in range(2):  # a redelivered staff reply is stored once
        await handoffs.add_message(handoff, role="staff", author_id="U9", author_name="Dana",
                                   text="Hi Carol, I am on it.", event_id="slack:ts1")
    history = await store.load_context(start.conversation_id,
                                       ContextLimits(budget_tokens=10_000, max_messages=50,
                                                     image_turns=1))
    staff = [m for m in history if m.role == "staff"]
    assert [m.text for m in staff] == ["Hi Carol, I am on it."]
    messages = build_messages(Profile(), history)
    assert messages[-1].role == "assistant"
    assert messages[-1].text == "[staff Dana] Hi Carol, I am on it."


async def test_idle_handoffs_found(store: Store) -> None:
    handoffs = Handoffs(store)
    handoff, _ = await handoffs.start(platform="slack", scope="C1/1.0", staff="telegram:-100",
                                      reason="x")
    assert await handoffs.idle(hours=1) == []
    later = utcnow() + timedelta(hours=2)
    assert [h.id for h in await handoffs.idle(hours=1, now=later)] == [handoff.id]
    assert handoff.age(later) >= timedelta(hours=2)


def test_phrases_match_whole_words() -> None:
    phrases = ("human", "a person", "mensch")
    assert wants_human("Can I talk to a HUMAN please?", phrases)
    assert wants_human("ich will einen Mensch", phrases)
    assert wants_human("a  person, please", phrases)
    assert not wants_human("humanity is great", phrases)


def test_settings_validated() -> None:
    settings = parse_handoff({"staff": "slack:C0STAFF", "phrases": ["Human"],
                              "after_failures": 2, "idle_release_hours": 24}, "profile 'shop'")
    assert settings is not None
    assert (settings.staff_platform, settings.staff_place) == ("slack", "C0STAFF")
    assert settings.phrases == ("human",)
    assert parse_handoff(None, "p") is None
    for bad in ({"staff": "email:x"}, {"staff": "slack:C1", "after_failures": -1},
                {"staff": "slack:C1", "phrases": "human"}, {"staff": "slack:C1", "oops": 1}):
        with pytest.raises(ConfigError):
            parse_handoff(bad, "profile 'shop'")


def test_staff_place_without_a_token_stops_start_up() -> None:
    from bots.relay import Desk
    from core.profiles import build_profile

    shop = build_profile("shop", {"handoff": {"staff": "slack:C0STAFF"}})
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN is not set"):
        Desk(service=None, store=None, posters={}, profiles={"shop": shop})  # type: ignore[arg-type]
