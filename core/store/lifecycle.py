"""Data lifecycle: prune what is older than an age, forget one person, apply retention.

Safe while replicas answer: every step is a short transaction over a bounded batch, and
only what is already old (or already the person's) is deleted, so a concurrent turn's new
rows are never touched; an open conversation row is never deleted (a turn may be writing
into it). Conversations that lose messages get their memory ``epoch`` raised, which drops
cached context windows (SQLite keeps them in each process) and, unless summaries are kept,
their rolling summary, which may hold what was deleted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, exists, func, select

from core.store import summaries
from core.store.models import (
    ConversationMemory,
    OutboxItem,
    PlatformState,
)
from core.store.store import Store
from core.store.tables import _att, _conv, _evt, _fb, _link, _msg, _usage

__all__ = ["Removed", "apply_retention", "forget", "prune"]

_out: Table = OutboxItem.__table__  # type: ignore[assignment]
_mem: Table = ConversationMemory.__table__  # type: ignore[assignment]
_state: Table = PlatformState.__table__  # type: ignore[assignment]

BATCH = 500  # rows per transaction: short enough not to hold up concurrent turns


@dataclass
class Removed:
    """What was (or, in a dry run, would be) deleted, per kind of row."""

    counts: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """One line per kind, in a fixed order."""
        verb = "would delete" if self.dry_run else "deleted"
        order = ("messages", "attachments", "feedback", "summaries", "conversations",
                 "usage rows", "inbound events", "outbox replies")
        return [f"{verb} {self.counts[k]} {k}" for k in order if k in self.counts]


def _delete_messages(conn: Connection, ids: list[int], removed: Removed, *,
                     drop_summary: bool, upsert: Any) -> None:
    """Delete messages (their links and feedback go with them), count, bump epochs."""
    links = conn.execute(select(_link.c.sha256).where(_link.c.message_id.in_(ids))).all()
    removed.counts["feedback"] += int(conn.scalar(
        select(func.count()).select_from(_fb).where(_fb.c.message_id.in_(ids))) or 0)
    convs = sorted({int(c) for c in conn.scalars(
        select(_msg.c.conversation_id).where(_msg.c.id.in_(ids)).distinct())})
    if drop_summary:
        removed.counts["summaries"] += int(conn.scalar(
            select(func.count()).select_from(_mem).where(
                _mem.c.conversation_id.in_(convs), _mem.c.summary != "")) or 0)
    conn.execute(delete(_fb).where(_fb.c.message_id.in_(ids)))
    conn.execute(delete(_link).where(_link.c.message_id.in_(ids)))
    removed.counts["messages"] += conn.execute(delete(_msg).where(_msg.c.id.in_(ids))).rowcount
    summaries.bump_epoch(conn, upsert, convs, drop_summary=drop_summary)
    _orphans(conn, sorted({r.sha256 for r in links}), removed)


def _orphans(conn: Connection, hashes: list[str], removed: Removed) -> None:
    """Delete the attachments among ``hashes`` that no message links to any more."""
    if not hashes:
        return
    linked = exists().where(_link.c.sha256 == _att.c.sha256)
    removed.counts["attachments"] += conn.execute(
        delete(_att).where(_att.c.sha256.in_(hashes), ~linked)).rowcount


def _drop_empty_closed(conn: Connection, where: Any, removed: Removed, *,
                       keep_summaries: bool) -> None:
    """Delete closed conversations (matching ``where``) left without messages."""
    empty = ~exists().where(_msg.c.conversation_id == _conv.c.id)
    query = select(_conv.c.id).where(_conv.c.status == "closed", empty, where)
    if keep_summaries:
        query = query.where(~exists().where(_mem.c.conversation_id == _conv.c.id,
                                            _mem.c.summary != ""))
    ids = [int(i) for i in conn.scalars(query.limit(BATCH))]
    if ids:
        removed.counts["conversations"] += conn.execute(
            delete(_conv).where(_conv.c.id.in_(ids))).rowcount


async def prune(store: Store, *, before: datetime, dry_run: bool = False,
                keep_summaries: bool = False,
                profiles: Collection[str] | None = None) -> Removed:
    """Delete messages older than ``before`` (of conversations with one of ``profiles``, if
    given), then closed conversations left empty, attachments nobody links to, and
    finished inbound events, sent outbox replies and usage windows older than ``before``."""
    removed = Removed(dry_run=dry_run)
    upsert = store.upsert
    old = _msg.c.created_at < before
    if profiles is not None:
        old = old & _msg.c.conversation_id.in_(
            select(_conv.c.id).where(_conv.c.profile.in_(list(profiles))))
    if dry_run:
        return await store.run(lambda c: _count(c, old, before, removed,
                                                everything=profiles is None), "count old rows")

    def batch(conn: Connection) -> int:
        ids = [int(i) for i in conn.scalars(select(_msg.c.id).where(old).limit(BATCH))]
        if ids:
            _delete_messages(conn, ids, removed, drop_summary=not keep_summaries,
                             upsert=upsert)
        return len(ids)

    while await store.run(batch, "prune messages") == BATCH:
        pass
    convs = _conv.c.updated_at < before
    if profiles is not None:
        convs = convs & _conv.c.profile.in_(list(profiles))
    while True:
        before_count = removed.counts["conversations"]
        await store.run(lambda c: _drop_empty_closed(c, convs, removed,
                                                     keep_summaries=keep_summaries),
                        "prune conversations")
        if removed.counts["conversations"] - before_count < BATCH:
            break
    if profiles is None:
        await store.run(lambda c: _old_bookkeeping(c, before, removed), "prune old events")
    for kind in ("messages", "attachments", "feedback", "conversations"):
        removed.counts.setdefault(kind, 0)
    if not keep_summaries:
        removed.counts.setdefault("summaries", 0)
    return removed


def _count(conn: Connection, old: Any, before: datetime, removed: Removed, *,
           everything: bool) -> Removed:
    removed.counts["messages"] = int(conn.scalar(
        select(func.count()).select_from(_msg).where(old)) or 0)
    ids = select(_msg.c.id).where(old)
    removed.counts["feedback"] = int(conn.scalar(
        select(func.count()).select_from(_fb).where(_fb.c.message_id.in_(ids))) or 0)
    if everything:
        removed.counts["inbound events"] = int(conn.scalar(
            select(func.count()).select_from(_evt).where(
                _evt.c.status.in_(("done", "failed")), _evt.c.finished_at < before)) or 0)
        removed.counts["outbox replies"] = int(conn.scalar(
            select(func.count()).select_from(_out).where(
                _out.c.status == "sent", _out.c.sent_at < before)) or 0)
    return removed


def _old_bookkeeping(conn: Connection, before: datetime, removed: Removed) -> None:
    removed.counts["inbound events"] += conn.execute(delete(_evt).where(
        _evt.c.status.in_(("done", "failed")), _evt.c.finished_at < before)).rowcount
    removed.counts["outbox replies"] += conn.execute(delete(_out).where(
        _out.c.status == "sent", _out.c.sent_at < before)).rowcount
    removed.counts["usage rows"] += conn.execute(delete(_usage).where(
        _usage.c.window_start < before)).rowcount
    unlinked = ~exists().where(_link.c.sha256 == _att.c.sha256)
    removed.counts["attachments"] += conn.execute(delete(_att).where(
        unlinked, _att.c.created_at < before)).rowcount


async def forget(store: Store, *, platform: str, user_id: str) -> Removed:
    """Delete one person's messages on ``platform`` and the answers to them, their
    attachments (unless someone else's message has the same), their feedback, usage
    counters and unsent outbox replies, what the adapter kept of them (``platform_state``
    keys naming them: what they looked at), and the summaries of the conversations they
    were in; closed conversations left empty go too."""
    removed = Removed()
    upsert = store.upsert
    in_platform = select(_conv.c.id).where(_conv.c.platform == platform)
    mine = ((_msg.c.author_id == user_id) & (_msg.c.role == "user")
            & _msg.c.conversation_id.in_(in_platform))

    def batch(conn: Connection) -> int:
        rows = conn.execute(select(_msg.c.id, _msg.c.conversation_id, _msg.c.event_id)
                            .where(mine).limit(BATCH)).all()
        if not rows:
            return 0
        ids = [int(r.id) for r in rows]
        for r in rows:
            if r.event_id:
                answers = conn.scalars(select(_msg.c.id).where(
                    _msg.c.conversation_id == r.conversation_id,
                    _msg.c.event_id == r.event_id, _msg.c.role == "assistant"))
                ids += [int(a) for a in answers]
        events = sorted({str(r.event_id) for r in rows if r.event_id})
        for start in range(0, len(events), BATCH):
            removed.counts["outbox replies"] += conn.execute(delete(_out).where(
                _out.c.platform == platform, _out.c.event_id.in_(events[start:start + BATCH]))
            ).rowcount
        _delete_messages(conn, ids, removed, drop_summary=True, upsert=upsert)
        return len(rows)

    while await store.run(batch, "forget the person's messages") == BATCH:
        pass

    def rest(conn: Connection) -> None:
        removed.counts["feedback"] += conn.execute(delete(_fb).where(
            _fb.c.user_id == user_id,
            _fb.c.message_id.in_(select(_msg.c.id).where(_msg.c.conversation_id.in_(
                in_platform))))).rowcount
        removed.counts["usage rows"] += conn.execute(delete(_usage).where(
            _usage.c.platform == platform, _usage.c.subject == f"user:{user_id}")).rowcount
        named = user_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conn.execute(delete(_state).where(_state.c.platform == platform, (
            _state.c.key.like(f"%/{named}", escape="\\")
            | _state.c.key.like(f"%/{named}/%", escape="\\"))))
        removed.counts.setdefault("conversations", 0)
        _drop_empty_closed(conn, _conv.c.platform == platform, removed, keep_summaries=False)

    await store.run(rest, "forget the person")
    for kind in ("messages", "attachments", "feedback", "summaries", "usage rows",
                 "outbox replies"):
        removed.counts.setdefault(kind, 0)
    return removed


async def apply_retention(store: Store, retention: dict[str, int], *,
                          now: datetime) -> Removed:
    """Prune each profile's conversations by its ``retention_days`` (profile → days)."""
    from datetime import timedelta

    total = Removed()
    for profile, days in sorted(retention.items()):
        done = await prune(store, before=now - timedelta(days=days), profiles=[profile])
        total.counts.update(done.counts)
    return total
