"""Human handoff: a conversation handed to staff, in SQL so that every replica sees it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, func, insert, select, update

from core.config import config_table
from core.errors import ConfigError
from core.store import Store
from core.store.models import Conversation, Handoff, Message, Relay, utcnow

__all__ = ["HandoffRecord", "HandoffSettings", "Handoffs", "offer_line", "parse_handoff",
           "wants_human"]

_ho: Table = Handoff.__table__  # type: ignore[assignment]
_conv: Table = Conversation.__table__  # type: ignore[assignment]
_msg: Table = Message.__table__  # type: ignore[assignment]
_rel: Table = Relay.__table__  # type: ignore[assignment]
PLATFORMS = ("slack", "telegram")
_KEYS = {"staff", "phrases", "after_failures", "idle_release_hours"}
DEFAULT_PHRASES = ("human", "agent", "a person")


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    """A profile's ``[handoff]`` table: where staff answer and what hands a chat to them."""

    staff: str  # "slack:C0STAFF" or "telegram:-1001234567890"
    phrases: tuple[str, ...] = DEFAULT_PHRASES
    after_failures: int = 2  # turns in a row the bot could not answer; 0: off
    idle_release_hours: float = 24.0

    @property
    def staff_platform(self) -> str:
        """``slack`` or ``telegram``."""
        return self.staff.split(":", 1)[0]

    @property
    def staff_place(self) -> str:
        """The channel id or chat id."""
        return self.staff.split(":", 1)[1]


def parse_handoff(raw: Mapping[str, Any] | None, where: str) -> HandoffSettings | None:
    """Validate a profile's ``[handoff]`` table (``None``: no handoff)."""
    table = config_table(raw, f"{where} handoff", _KEYS)
    if not table:
        return None
    staff = table.get("staff")
    if not isinstance(staff, str) or ":" not in staff \
            or staff.split(":", 1)[0] not in PLATFORMS or not staff.split(":", 1)[1]:
        raise ConfigError(f"{where} handoff: staff must look like \"slack:C0STAFF\" or "
                          "\"telegram:-1001234567890\"")
    phrases = table.get("phrases", list(DEFAULT_PHRASES))
    if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip()
                                                for p in phrases):
        raise ConfigError(f"{where} handoff: phrases must be a list of words or phrases")
    failures = table.get("after_failures", 2)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ConfigError(f"{where} handoff: after_failures must be an integer of at least 0")
    idle = table.get("idle_release_hours", 24)
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not 0 < idle <= 24 * 90:
        raise ConfigError(f"{where} handoff: idle_release_hours must lie in (0, 2160]")
    return HandoffSettings(staff, tuple(p.strip().lower() for p in phrases), failures,
                           float(idle))


def offer_line(settings: HandoffSettings | None) -> str:
    """What "I don't know" adds when a person can take over (empty without a handoff)."""
    if settings is None:
        return ""
    return f"Write \"{settings.phrases[0]}\" to talk to a person from our team."


def wants_human(text: str, phrases: Sequence[str]) -> bool:
    """Whether ``text`` asks for a person: one of ``phrases`` as whole words."""
    low = " ".join(text.lower().split())
    return any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", low) for p in phrases)


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """One handoff as stored."""

    id: int
    platform: str
    scope: str
    profile: str | None
    staff: str
    notice_ref: str | None
    status: str
    reason: str
    trigger: str
    opened_at: datetime
    last_activity_at: datetime
    customer: Mapping[str, Any] = field(default_factory=dict)
    conversation_id: int | None = None

    def age(self, now: datetime | None = None) -> timedelta:
        """How long the handoff has been open."""
        return (now or utcnow()) - _aware(self.opened_at)


def _aware(at: datetime) -> datetime:
    from datetime import UTC
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


_COLUMNS = (_ho.c.id, _ho.c.platform, _ho.c.scope_key, _ho.c.profile, _ho.c.staff,
            _ho.c.notice_ref, _ho.c.status, _ho.c.reason, _ho.c.trigger, _ho.c.opened_at,
            _ho.c.last_activity_at, _ho.c.customer, _ho.c.conversation_id)


def _record(row: Any) -> HandoffRecord:
    return HandoffRecord(row.id, row.platform, row.scope_key, row.profile, row.staff,
                         row.notice_ref, row.status, row.reason, row.trigger,
                         _aware(row.opened_at), _aware(row.last_activity_at),
                         json.loads(row.customer) if row.customer else {},
                         row.conversation_id)


class Handoffs:
    """Start, find, relay into and release handoffs (one open per conversation key).

    The knowledge base (or any caller) hands a conversation to people with ``start``.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def start(self, *, platform: str, scope: str, staff: str, reason: str,
                    trigger: str = "tool", profile: str | None = None,
                    customer: Mapping[str, Any] | None = None,
                    ) -> tuple[HandoffRecord, bool]:
        """Hand the conversation under this key to staff; ``(handoff, True)`` when this
        call opened it, ``(the open one, False)`` when one was open already (another
        replica, a redelivery)."""
        insert_open = self._store.upsert(_ho).on_conflict_do_nothing(
            index_elements=["platform", "scope_key"],
            index_where=_ho.c.status == "open")

        def work(conn: Connection) -> tuple[HandoffRecord, bool]:
            conv = conn.execute(select(_conv.c.id).where(
                _conv.c.platform == platform, _conv.c.scope_key == scope,
                _conv.c.status == "open")).scalar()
            now = utcnow()
            made = conn.execute(insert_open.values(
                platform=platform, scope_key=scope, conversation_id=conv, profile=profile,
                customer=json.dumps(dict(customer or {})), staff=staff, status="open",
                reason=reason[:2000], trigger=trigger, opened_at=now, last_activity_at=now,
            ).returning(_ho.c.id)).scalar()
            row = conn.execute(select(*_COLUMNS).where(
                _ho.c.platform == platform, _ho.c.scope_key == scope,
                _ho.c.status == "open")).one()
            return _record(row), made is not None

        return await self._store.run(work, "handing the conversation to staff")

    async def active(self, *, platform: str, scope: str) -> HandoffRecord | None:
        """The open handoff of this conversation key, if any."""
        def work(conn: Connection) -> HandoffRecord | None:
            row = conn.execute(select(*_COLUMNS).where(
                _ho.c.platform == platform, _ho.c.scope_key == scope,
                _ho.c.status == "open")).first()
            return None if row is None else _record(row)

        return await self._store.run(work, "reading the handoff")

    async def set_notice(self, handoff_id: int, ref: str) -> None:
        """Remember the staff notice; replies to it are relayed to the customer."""
        def work(conn: Connection) -> None:
            conn.execute(update(_ho).where(_ho.c.id == handoff_id).values(notice_ref=ref))

        await self._store.run(work, "storing the staff notice")

    async def set_customer(self, handoff_id: int, customer: Mapping[str, Any]) -> None:
        """Remember where replies to the customer go (a handoff the model opened)."""
        def work(conn: Connection) -> None:
            conn.execute(update(_ho).where(_ho.c.id == handoff_id)
                         .values(customer=json.dumps(dict(customer))))

        await self._store.run(work, "storing the customer's place")

    async def by_notice(self, ref: str) -> HandoffRecord | None:
        """The open handoff whose staff notice is ``ref``."""
        def work(conn: Connection) -> HandoffRecord | None:
            row = conn.execute(select(*_COLUMNS).where(
                _ho.c.notice_ref == ref, _ho.c.status == "open")).first()
            return None if row is None else _record(row)

        return await self._store.run(work, "finding the handoff")

    async def by_ref(self, ref: str) -> HandoffRecord | None:
        """The open handoff whose staff notice, or a customer message relayed to staff,
        is the message ``ref`` (what a staff member replied to)."""
        relayed = select(_rel.c.handoff_id).where(_rel.c.ref == ref,
                                                  _rel.c.handoff_id.is_not(None))

        def work(conn: Connection) -> HandoffRecord | None:
            row = conn.execute(select(*_COLUMNS).where(
                _ho.c.notice_ref == ref, _ho.c.status == "open")).first()
            if row is None:
                row = conn.execute(select(*_COLUMNS).where(
                    _ho.c.id.in_(relayed.scalar_subquery()), _ho.c.status == "open")
                    .order_by(_ho.c.id.desc())).first()
            return None if row is None else _record(row)

        return await self._store.run(work, "finding the handoff")

    async def add_message(self, handoff: HandoffRecord, *, role: str, author_id: str,
                          author_name: str, text: str, event_id: str) -> bool:
        """Store a relayed message (``role`` "staff" or "user") in the customer's
        conversation once per ``event_id``; ``False`` when it was stored before."""
        def work(conn: Connection) -> bool:
            conv = conn.execute(select(_conv.c.id).where(
                _conv.c.platform == handoff.platform, _conv.c.scope_key == handoff.scope,
                _conv.c.status == "open")).scalar()
            if conv is None:
                conv = conn.execute(insert(_conv).values(
                    platform=handoff.platform, scope_key=handoff.scope,
                    profile=handoff.profile, status="open").returning(_conv.c.id)).scalar_one()
            seen = conn.execute(select(func.count()).select_from(_msg).where(
                _msg.c.conversation_id == conv, _msg.c.event_id == event_id,
                _msg.c.role == role)).scalar_one()
            if seen:
                return False
            now = utcnow()
            conn.execute(insert(_msg).values(
                conversation_id=conv, role=role, author_id=author_id, author_name=author_name,
                text=text, token_count=max(1, len(text) // 4), status="ok", event_id=event_id,
                created_at=now))
            conn.execute(update(_ho).where(_ho.c.id == handoff.id)
                         .values(last_activity_at=now))
            conn.execute(update(_conv).where(_conv.c.id == conv).values(updated_at=now))
            return True

        return await self._store.run(work, "storing a relayed message")

    async def release(self, handoff_id: int, *, by: str) -> bool:
        """Close the handoff (the bot answers again); ``False`` if it was closed already."""
        def work(conn: Connection) -> bool:
            done = conn.execute(update(_ho).where(
                _ho.c.id == handoff_id, _ho.c.status == "open",
            ).values(status="released", closed_at=utcnow(), closed_by=by[:128]))
            return bool(done.rowcount)

        return await self._store.run(work, "releasing the handoff")

    async def open_handoffs(self) -> list[HandoffRecord]:
        """Every open handoff, oldest first."""
        def work(conn: Connection) -> list[HandoffRecord]:
            rows = conn.execute(select(*_COLUMNS).where(_ho.c.status == "open")
                                .order_by(_ho.c.opened_at, _ho.c.id)).all()
            return [_record(r) for r in rows]

        return await self._store.run(work, "listing handoffs")

    async def idle(self, *, hours: float, now: datetime | None = None) -> list[HandoffRecord]:
        """Open handoffs with no relayed message for ``hours``."""
        before = (now or utcnow()) - timedelta(hours=hours)

        def work(conn: Connection) -> list[HandoffRecord]:
            rows = conn.execute(select(*_COLUMNS).where(and_(
                _ho.c.status == "open", _ho.c.last_activity_at < before))).all()
            return [_record(r) for r in rows]

        return await self._store.run(work, "finding idle handoffs")

    async def failures_in_row(self, *, platform: str, scope: str, limit: int) -> int:
        """How many of the conversation's latest turns (up to ``limit``) failed, newest
        first, until one succeeded."""
        def work(conn: Connection) -> int:
            rows = conn.execute(select(_msg.c.status).join(
                _conv, _conv.c.id == _msg.c.conversation_id).where(
                _conv.c.platform == platform, _conv.c.scope_key == scope,
                _conv.c.status == "open", _msg.c.role == "assistant",
            ).order_by(_msg.c.id.desc()).limit(limit)).scalars().all()
            count = 0
            for status in rows:
                if status != "failed":
                    break
                count += 1
            return count

        return await self._store.run(work, "counting failed turns")
