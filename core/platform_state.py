"""Small values an adapter keeps for every replica (Slack's focus and DM surface), in SQL.

An adapter writes what an event told it when the event arrives, and whichever replica
answers the next message reads it here: with several replicas (HTTP behind a load
balancer, or Socket Mode spreading envelopes) the event and the message that needs it
often reach different processes. Each value carries the ``stamp`` of the event that set
it (text that sorts in event order): a late or redelivered older event does not replace
a newer value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, select

from core.store import Store
from core.store.models import PlatformState, utcnow

__all__ = ["SharedState"]

_state: Table = PlatformState.__table__  # type: ignore[assignment]


class SharedState:
    """Per-platform values by key (JSON objects), newest event wins."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def put(self, *, platform: str, key: str, value: Mapping[str, Any],
                  stamp: str) -> None:
        """Keep ``value`` under ``key`` unless a value from a later event is there."""
        await self.put_many(platform=platform, values={key: value}, stamp=stamp)

    async def put_many(self, *, platform: str, values: Mapping[str, Mapping[str, Any]],
                       stamp: str) -> None:
        """Keep several values from one event, in one transaction."""
        now = utcnow()
        statements = []
        for key, value in values.items():
            stmt = self._store.upsert(_state).values(
                platform=platform, key=key, value=json.dumps(dict(value)), stamp=stamp,
                updated_at=now)
            excluded = stmt.excluded
            statements.append(stmt.on_conflict_do_update(
                index_elements=["platform", "key"],
                set_={"value": excluded.value, "stamp": excluded.stamp,
                      "updated_at": excluded.updated_at},
                where=_state.c.stamp <= excluded.stamp))

        def work(conn: Connection) -> None:
            for stmt in statements:
                conn.execute(stmt)

        await self._store.run(work, "storing what the person looks at")

    async def get_many(self, *, platform: str,
                       keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The values stored under ``keys`` (absent keys are left out)."""
        query = select(_state.c.key, _state.c.value).where(
            _state.c.platform == platform, _state.c.key.in_(list(keys)))

        def work(conn: Connection) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}
            for key, raw in conn.execute(query):
                try:
                    value = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    found[str(key)] = value
            return found

        return await self._store.run_one(work, "reading what the person looks at")  # a read
