"""Telegram Business state in SQL: connections (enabled, can reply), owner pauses, and
edits or deletions of messages still waiting in the inbox."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select, update

from core.store import Store
from core.store.models import BusinessConnection, ChatPause, InboundEvent, utcnow

__all__ = ["BusinessLink", "BusinessState"]

_bc: Table = BusinessConnection.__table__  # type: ignore[assignment]
_pause: Table = ChatPause.__table__  # type: ignore[assignment]
_evt: Table = InboundEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class BusinessLink:
    """A business connection as stored."""

    id: str
    user_id: str
    enabled: bool
    can_reply: bool


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class BusinessState:
    """Business connections, pauses and inbox revisions, seen by every replica."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def save_connection(self, *, id: str, user_id: str, enabled: bool,
                              can_reply: bool) -> None:
        """Store the connection as Telegram last reported it."""
        stmt = self._store.upsert(_bc).values(id=id, user_id=user_id, enabled=enabled,
                                              can_reply=can_reply, updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={
            "user_id": user_id, "enabled": enabled, "can_reply": can_reply,
            "updated_at": utcnow()})

        def work(conn: Connection) -> None:
            conn.execute(stmt)

        await self._store.run(work, "storing the business connection")

    async def connection(self, id: str) -> BusinessLink | None:
        """The stored connection, if Telegram ever reported it."""
        def work(conn: Connection) -> BusinessLink | None:
            row = conn.execute(select(_bc).where(_bc.c.id == id)).first()
            return None if row is None else BusinessLink(row.id, row.user_id,
                                                        bool(row.enabled), bool(row.can_reply))

        return await self._store.run(work, "reading the business connection")

    async def pause(self, *, platform: str, scope: str, until: datetime) -> None:
        """Keep the bot quiet in this conversation until ``until``."""
        stmt = self._store.upsert(_pause).values(platform=platform, scope_key=scope,
                                                 until=until)
        stmt = stmt.on_conflict_do_update(index_elements=["platform", "scope_key"],
                                          set_={"until": until})

        def work(conn: Connection) -> None:
            conn.execute(stmt)

        await self._store.run(work, "pausing the bot in a chat")

    async def paused_until(self, *, platform: str, scope: str) -> datetime | None:
        """Until when the bot keeps quiet here (``None``: never paused)."""
        def work(conn: Connection) -> datetime | None:
            at = conn.execute(select(_pause.c.until).where(
                _pause.c.platform == platform, _pause.c.scope_key == scope)).scalar()
            return None if at is None else _aware(at)

        return await self._store.run(work, "reading the chat pause")

    async def revise(self, *, platform: str, event_id: str,
                     payload: Mapping[str, Any]) -> bool:
        """Replace a waiting message with its edited version; ``False`` once its turn began
        (or it was answered)."""
        def work(conn: Connection) -> bool:
            done = conn.execute(update(_evt).where(
                _evt.c.platform == platform, _evt.c.event_id == event_id,
                _evt.c.status == "received").values(payload=json.dumps(dict(payload))))
            return bool(done.rowcount)

        return await self._store.run(work, "revising a waiting message")

    async def withdraw(self, *, platform: str, event_ids: Sequence[str]) -> int:
        """Drop waiting messages that were deleted; how many were still waiting."""
        def work(conn: Connection) -> int:
            done = conn.execute(update(_evt).where(
                _evt.c.platform == platform, _evt.c.event_id.in_(list(event_ids)),
                _evt.c.status == "received").values(status="done", finished_at=utcnow(),
                                                    payload=None))
            return int(done.rowcount)

        return await self._store.run(work, "dropping deleted messages")
