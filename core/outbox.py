"""The outbox: replies the platform would not take, kept to be sent again.

When a platform call still fails after the client's own retries (Slack's or Telegram's
API down, a network partition), the adapter finishes reading the turn's reply (``Tap``)
and stores it here with where it should go. ``chatbridge outbox retry`` sends what is
pending; ``chatbridge outbox list`` shows it. Nothing the model answered is dropped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, insert, or_, select, update

from core.store import Store
from core.store.models import OutboxItem, utcnow
from core.types import DeltaEvent, ErrorEvent, FinalEvent, ReplyEvent

__all__ = ["Outbox", "Pending", "Tap"]

_out: Table = OutboxItem.__table__  # type: ignore[assignment]
TAKEN_FOR = timedelta(minutes=10)  # a reply taken by a retry that died is free again after


class Tap:
    """Passes reply events through and remembers the reply, so that it can be finished
    and kept when showing it fails halfway."""

    def __init__(self, events: AsyncIterator[ReplyEvent]) -> None:
        self._events = events
        self._deltas: list[str] = []
        self.text: str | None = None  # the whole reply, once the turn ended
        self.answered = False  # the turn ended in an answer (not an error)

    async def events(self) -> AsyncIterator[ReplyEvent]:
        """The events, passed through."""
        async for event in self._events:
            self._note(event)
            yield event

    def _note(self, event: ReplyEvent) -> None:
        if isinstance(event, DeltaEvent):
            self._deltas.append(event.text)
        elif isinstance(event, FinalEvent):
            self.answered = True
            text = event.text or "".join(self._deltas)
            self.text = f"{text}\n\n_{event.notice}_" if event.notice else text
        elif isinstance(event, ErrorEvent):
            self.text = "".join(self._deltas)
            self.text = (self.text + "\n\n" if self.text else "") + f":warning: {event.message}"

    async def finish(self) -> str:
        """Read the rest of the turn (the model is still answering) and return the reply."""
        async for event in self._events:
            self._note(event)
        return self.text if self.text is not None else "".join(self._deltas)


@dataclass(frozen=True, slots=True)
class Pending:
    """A reply waiting in the outbox."""

    id: int
    platform: str
    event_id: str
    target: Mapping[str, Any]
    text: str
    attempts: int
    error: str | None
    created_at: datetime


class Outbox:
    """Undelivered replies in SQL."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, *, platform: str, event_id: str, target: Mapping[str, Any],
                  text: str, error: str) -> int:
        """Keep a reply that could not be delivered; returns its id."""

        def work(conn: Connection) -> int:
            return int(conn.execute(insert(_out).values(
                platform=platform, event_id=event_id, target=json.dumps(dict(target)),
                text=text, status="pending", attempts=1, error=error, created_at=utcnow(),
            ).returning(_out.c.id)).scalar_one())

        return await self._store.run(work, "keep the undelivered reply")

    async def pending(self, platform: str | None = None, limit: int = 1000) -> list[Pending]:
        """Replies still to send, oldest first."""
        query = (select(_out).where(_out.c.status.in_(("pending", "sending")))
                 .order_by(_out.c.id).limit(limit))
        if platform:
            query = query.where(_out.c.platform == platform)

        def work(conn: Connection) -> list[Pending]:
            return [Pending(r.id, r.platform, r.event_id, json.loads(r.target), r.text,
                            r.attempts, r.error, r.created_at) for r in conn.execute(query)]

        return await self._store.run(work, "read the outbox")

    async def take(self, item_id: int) -> bool:
        """Take a pending reply for sending; ``False`` if another ``outbox retry`` has it
        (taken less than ``TAKEN_FOR`` ago) or it was sent meanwhile."""
        now = utcnow()

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(_out)
                .where(_out.c.id == item_id, or_(
                    _out.c.status == "pending",
                    and_(_out.c.status == "sending", _out.c.sent_at < now - TAKEN_FOR)))
                .values(status="sending", sent_at=now)  # sent_at: when it was taken
            )
            return bool(result.rowcount)

        return await self._store.run(work, "take a reply from the outbox")

    async def sent(self, item_id: int) -> None:
        """Mark a reply delivered."""
        await self._store.run(lambda conn: conn.execute(
            update(_out).where(_out.c.id == item_id)
            .values(status="sent", sent_at=utcnow(), attempts=_out.c.attempts + 1)
        ), "update the outbox")

    async def failed(self, item_id: int, error: str) -> None:
        """Count another failed attempt; the reply stays pending."""
        await self._store.run(lambda conn: conn.execute(
            update(_out).where(_out.c.id == item_id)
            .values(status="pending", sent_at=None, error=error,
                    attempts=_out.c.attempts + 1)
        ), "update the outbox")
