"""Rolling summaries in SQL: read the last finished one, claim the right to write the next.

One ``conversation_memory`` row per conversation that ever needed a summary. A summariser
claims the row (a lease, like the inbox's) before it calls the model, so one replica at a
time writes a conversation's summary; its result is kept only if it still holds the lease
and no prune/forget changed the conversation meanwhile (``epoch``). Plain functions over
a ``Connection``, run by ``Store.run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, bindparam, literal, or_, select, update

from core.store.models import ConversationMemory, Message, utcnow

__all__ = [
    "SUMMARY_ROLE", "Claimed", "MemoryRow", "SummaryInput", "attempts", "bump_epoch", "claim",
    "fail", "read_memory", "release", "save", "to_summarise",
]

SUMMARY_ROLE = "summary"  # the role of the summary in a loaded context (before the messages)

_mem: Table = ConversationMemory.__table__  # type: ignore[assignment]
_msg: Table = Message.__table__  # type: ignore[assignment]

_READ = select(_mem.c.summary, _mem.c.summary_tokens, _mem.c.covers_message_id,
               _mem.c.epoch, _mem.c.updated_at).where(
    _mem.c.conversation_id == bindparam("p_id"))


class MemoryRow(NamedTuple):
    """The last finished summary of a conversation (``summary`` may be empty)."""

    summary: str
    summary_tokens: int
    covers_message_id: int
    epoch: int
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A summariser's claim on a conversation: what it starts from."""

    conversation_id: int
    owner: str
    summary: str
    covers_message_id: int
    epoch: int


class SummaryInput(NamedTuple):
    """One stored message to fold into the summary."""

    id: int
    role: str
    author_name: str
    text: str
    token_count: int


def read_memory(conn: Connection, conversation_id: int) -> MemoryRow | None:
    """The conversation's memory row, if it has one."""
    row = conn.execute(_READ, {"p_id": conversation_id}).first()
    if row is None:
        return None
    return MemoryRow(row.summary or "", int(row.summary_tokens or 0),
                     int(row.covers_message_id or 0), int(row.epoch or 0), row.updated_at)


def _ensure(conn: Connection, upsert: Any, conversation_id: int) -> None:
    conn.execute(upsert(_mem).values(
        conversation_id=conversation_id, summary="", summary_tokens=0, covers_message_id=0,
        updated_at=utcnow(), epoch=0, attempts=0,
    ).on_conflict_do_nothing(index_elements=["conversation_id"]))


def claim(conn: Connection, upsert: Any, conversation_id: int, *, owner: str,
          lease_seconds: float, force: bool = False) -> Claimed | None:
    """Take the right to write this conversation's next summary; ``None`` when another
    summariser holds it, or (unless ``force``) a failed attempt is not due for a retry."""
    _ensure(conn, upsert, conversation_id)
    now = utcnow()
    due = literal(True) if force else or_(_mem.c.retry_at.is_(None), _mem.c.retry_at <= now)
    row = conn.execute(
        update(_mem)
        .where(_mem.c.conversation_id == conversation_id,
               or_(_mem.c.lease_until.is_(None), _mem.c.lease_until < now), due)
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        .returning(_mem.c.summary, _mem.c.covers_message_id, _mem.c.epoch)
    ).first()
    if row is None:
        return None
    return Claimed(conversation_id, owner, row.summary or "", int(row.covers_message_id),
                   int(row.epoch))


def to_summarise(conn: Connection, *, conversation_id: int, after: int, keep_tokens: int,
                 keep_messages: int, limit: int) -> list[SummaryInput]:
    """Messages after ``after`` that fall outside the newest ``keep_*`` (oldest first,
    at most ``limit``): what the next summary step folds in. Failed turns are left out."""
    base = (select(_msg.c.id, _msg.c.role, _msg.c.author_name, _msg.c.text,
                   _msg.c.token_count)
            .where(_msg.c.conversation_id == conversation_id, _msg.c.id > after,
                   _msg.c.status != "failed"))
    cutoff = None
    used = 0
    newest = conn.execute(base.order_by(_msg.c.id.desc()).limit(keep_messages + 1)).all()
    for count, row in enumerate(newest):
        used += int(row.token_count)
        if count >= keep_messages or used > keep_tokens:
            cutoff = int(row.id)  # this one and everything older are summarised
            break
    if cutoff is None:
        return []
    rows = conn.execute(base.where(_msg.c.id <= cutoff).order_by(_msg.c.id).limit(limit))
    return [SummaryInput(int(r.id), r.role, r.author_name or "", r.text or "",
                         int(r.token_count)) for r in rows]


def save(conn: Connection, *, claimed: Claimed, summary: str, tokens: int, covers: int,
         model: str, lease_seconds: float) -> bool:
    """Store a finished summary step and extend the claim for the next; ``False`` (nothing
    stored) if the claim was lost or prune/forget changed the conversation since."""
    now = utcnow()
    result = conn.execute(
        update(_mem)
        .where(_mem.c.conversation_id == claimed.conversation_id,
               _mem.c.lease_owner == claimed.owner, _mem.c.epoch == claimed.epoch)
        .values(summary=summary, summary_tokens=tokens, covers_message_id=covers, model=model,
                updated_at=now, attempts=0, retry_at=None, last_error=None,
                lease_until=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)


def release(conn: Connection, claimed: Claimed) -> None:
    """Give the claim back without a new summary (nothing was left to fold in)."""
    conn.execute(
        update(_mem)
        .where(_mem.c.conversation_id == claimed.conversation_id,
               _mem.c.lease_owner == claimed.owner)
        .values(lease_owner=None, lease_until=None)
    )


def fail(conn: Connection, claimed: Claimed, *, error: str, backoff: float) -> None:
    """Record a failed summary call; another attempt is due after ``backoff`` seconds."""
    conn.execute(
        update(_mem)
        .where(_mem.c.conversation_id == claimed.conversation_id,
               _mem.c.lease_owner == claimed.owner)
        .values(lease_owner=None, lease_until=None, attempts=_mem.c.attempts + 1,
                retry_at=utcnow() + timedelta(seconds=backoff), last_error=error[:500])
    )


def attempts(conn: Connection, conversation_id: int) -> int:
    """Failed summary calls in a row for this conversation."""
    value = conn.scalar(select(_mem.c.attempts).where(
        _mem.c.conversation_id == conversation_id))
    return int(value or 0)


def bump_epoch(conn: Connection, upsert: Any, conversation_ids: list[int], *,
               drop_summary: bool) -> None:
    """Messages of these conversations were deleted: drop their cached windows (and, with
    ``drop_summary``, their summaries, which may hold what was deleted)."""
    for conversation_id in conversation_ids:
        _ensure(conn, upsert, conversation_id)
    if not conversation_ids:
        return
    values: dict[str, Any] = {"epoch": _mem.c.epoch + 1}
    if drop_summary:
        values.update(summary="", summary_tokens=0, covers_message_id=0, updated_at=utcnow())
    for start in range(0, len(conversation_ids), 500):
        conn.execute(update(_mem).where(
            _mem.c.conversation_id.in_(conversation_ids[start:start + 500])).values(**values))
