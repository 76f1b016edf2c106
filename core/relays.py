"""Relays to and from staff in SQL: claimed with a lease, marked sent, taken again after a crash.

A relay (a customer's message to the staff thread, a staff reply to the customer, a notice,
a note on release) is one row per platform and key (the event that carried it plus what it
is, e.g. ``…/relay``). Whoever inserts the row owns it for ``lease`` seconds and renews the
lease while the platform call runs; once the call returned the row is ``sent`` (or
``outbox``: the platform refused it and ``chatbridge outbox retry`` sends it). A replica that
died between the claim and the answer leaves a row ``sending`` with an expired lease: the
desk's sweeper takes it again (``attempts`` grows) and sends it once more, after looking
for the copy that may have arrived (Slack: message metadata) — at least once, and on Slack
never twice in the thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, select, update

from core.store import Store
from core.store.models import Relay, utcnow

__all__ = ["RelayRecord", "Relays"]

_rel: Table = Relay.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class RelayRecord:
    """One relay as claimed: what to send where, and how often it was claimed."""

    id: int
    platform: str
    key: str
    target: Mapping[str, Any]
    text: str
    kind: str  # "text", or "notice" (posted with the release button; its ref is kept)
    handoff_id: int | None
    attempts: int
    created_at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _record(row: Any) -> RelayRecord:
    return RelayRecord(row.id, row.platform, row.key, json.loads(row.target), row.text,
                       row.kind, row.handoff_id, row.attempts, _aware(row.created_at))


_COLUMNS = (_rel.c.id, _rel.c.platform, _rel.c.key, _rel.c.target, _rel.c.text, _rel.c.kind,
            _rel.c.handoff_id, _rel.c.attempts, _rel.c.created_at)


class Relays:
    """The relay ledger, shared by every replica."""

    def __init__(self, store: Store, *, owner: str) -> None:
        self._store = store
        self._owner = owner[:128]

    async def claim(self, *, platform: str, key: str, target: Mapping[str, Any], text: str,
                    lease: float, kind: str = "text", handoff_id: int | None = None,
                    ) -> RelayRecord | None:
        """Own the relay ``key`` for ``lease`` seconds; ``None`` when it was sent (or is
        being sent) already. A relay whose claimer's lease ran out is taken over."""
        now = utcnow()
        until = now + timedelta(seconds=lease)
        insert_new = self._store.upsert(_rel).on_conflict_do_nothing(
            index_elements=["platform", "key"])

        def work(conn: Connection) -> RelayRecord | None:
            made = conn.execute(insert_new.values(
                platform=platform, key=key[:256], target=json.dumps(dict(target)), text=text,
                kind=kind, handoff_id=handoff_id, status="sending", attempts=1,
                owner=self._owner, lease_until=until, created_at=now,
            ).returning(*_COLUMNS)).first()
            if made is not None:
                return _record(made)
            return _take(conn, and_(_rel.c.platform == platform, _rel.c.key == key[:256]),
                         now, until, self._owner)

        return await self._store.run(work, "claiming a relay")

    async def renew(self, relay_id: int, lease: float) -> bool:
        """Extend the lease while the platform call runs; ``False`` if it was lost."""
        until = utcnow() + timedelta(seconds=lease)

        def work(conn: Connection) -> bool:
            done = conn.execute(update(_rel).where(
                _rel.c.id == relay_id, _rel.c.status == "sending",
                _rel.c.owner == self._owner).values(lease_until=until))
            return bool(done.rowcount)

        return await self._store.run(work, "renewing a relay's lease")

    async def expired(self, *, limit: int = 100) -> list[int]:
        """Relays whose claimer died mid-send (lease over, never marked sent)."""
        now = utcnow()

        def work(conn: Connection) -> list[int]:
            return [int(i) for i in conn.execute(select(_rel.c.id).where(
                _rel.c.status == "sending", _rel.c.lease_until < now)
                .order_by(_rel.c.id).limit(limit)).scalars()]

        return await self._store.run(work, "finding relays to send again")

    async def retake(self, relay_id: int, lease: float) -> RelayRecord | None:
        """Take over one expired relay; ``None`` if another replica took it first."""
        now = utcnow()
        until = now + timedelta(seconds=lease)

        def work(conn: Connection) -> RelayRecord | None:
            return _take(conn, _rel.c.id == relay_id, now, until, self._owner)

        return await self._store.run(work, "taking a relay over")

    async def finish(self, relay_id: int, *, status: str, ref: str | None = None) -> None:
        """Mark the relay ``sent`` (at ``ref``) or ``outbox`` (the platform refused it)."""
        def work(conn: Connection) -> None:
            conn.execute(update(_rel).where(_rel.c.id == relay_id).values(
                status=status, ref=ref, lease_until=utcnow(), owner=None))

        await self._store.run(work, "marking a relay sent")

    async def status(self, *, platform: str, key: str) -> str | None:
        """The relay's status (``sending``, ``sent``, ``outbox``), ``None`` if unknown."""
        def work(conn: Connection) -> str | None:
            return conn.execute(select(_rel.c.status).where(
                _rel.c.platform == platform, _rel.c.key == key[:256])).scalar()

        return await self._store.run(work, "reading a relay")


def _take(conn: Connection, which: Any, now: datetime, until: datetime,
          owner: str) -> RelayRecord | None:
    row = conn.execute(update(_rel).where(
        which, _rel.c.status == "sending", _rel.c.lease_until < now,
    ).values(owner=owner, lease_until=until, attempts=_rel.c.attempts + 1)
        .returning(*_COLUMNS)).first()
    return None if row is None else _record(row)
