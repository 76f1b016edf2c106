"""A Slack turn on PostgreSQL costs at most 12 server round trips (issue 11).

Every request asyncpg sends and waits on is counted (a statement's execution, BEGIN,
COMMIT, a prepare) while the real bot (bolt over HTTP, the inbox, the store) records a DM,
claims it, answers it and releases the conversation — the inbox's idle claims included.
Left out: the test's own "is the inbox idle?" reads, and asyncpg's prepares (once per
statement and pooled connection: the benchmark's 200 turns make them a fraction of a round
trip per turn). A count, not a time: it holds on a loaded machine too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement

from tests.bots.slack.conftest import HarnessFactory, message
from tests.fakes.model_server import Reply

MAX_ROUND_TRIPS = 12
_IDLE_PROBE = "SELECT min(inbound_events.available_at)"  # Harness.idle's, not the bot's


def _count(monkeypatch: pytest.MonkeyPatch, counts: Counter[str]) -> None:
    def counting(cls: type, name: str) -> None:
        original = getattr(cls, name)

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            query = self.get_query() if isinstance(self, PreparedStatement) else \
                (args[0] if args and isinstance(args[0], str) else "")
            kind = ("probe" if query.lstrip().startswith(_IDLE_PROBE)
                    else "prepare" if name == "prepare" else "trips")
            counts[kind] += 1
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    for cls, name in ((asyncpg.Connection, "execute"), (asyncpg.Connection, "fetchrow"),
                      (asyncpg.Connection, "fetch"), (asyncpg.Connection, "fetchval"),
                      (asyncpg.Connection, "prepare"), (asyncpg.Connection, "executemany"),
                      (PreparedStatement, "fetch"), (PreparedStatement, "fetchrow"),
                      (PreparedStatement, "executemany")):
        counting(cls, name)


async def test_a_turn_takes_few_round_trips(make_harness: HarnessFactory, postgres_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_harness(postgres_url) as h:
        h.model.enqueue(*(Reply(text=f"Answer {i}.") for i in range(4)))
        # Warm: the statements are prepared once per pooled connection (asyncpg's cache).
        for text in ("warm", "up"):
            assert await h.event(message(text, channel="D0", channel_type="im")) == 200
            await h.idle()
        counts: Counter[str] = Counter()
        _count(monkeypatch, counts)
        assert await h.event(message("hello", channel="D1", channel_type="im")) == 200
        await h.idle()
        first = counts["trips"]
        assert await h.event(message("again", channel="D1", channel_type="im")) == 200
        await h.idle()
        later = counts["trips"] - first
        monkeypatch.undo()
        assert [m.text for m in h.slack.posted()][-2:] == ["Answer 2.", "Answer 3."]
    print(f"server round trips: first message {first}, later message {later}, "
          f"prepares {counts['prepare']}")
    assert first <= MAX_ROUND_TRIPS
    assert later <= MAX_ROUND_TRIPS
