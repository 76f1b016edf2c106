"""The inbox in SQL: queued inbound events, claimed per conversation key under a lease.

An adapter records each inbound event here *before* it acknowledges it to the platform
(``enqueue``); the unique ``(platform, event_id)`` makes a redelivery a no-op. Workers —
in any replica — ``claim`` conversation keys whose oldest waiting event is due and whose
lease (``inbox_leases``) has expired, taking every event waiting under the key in one
batch. The lease is renewed while the batch is answered and given back at the end; a
replica that dies leaves it to expire, and its events are claimed again.

On PostgreSQL the lease rows are locked with ``FOR UPDATE SKIP LOCKED``, so replicas
claiming at the same moment skip each other's keys instead of waiting or double-claiming.
On SQLite (one process) the same statements run without the locking clause: the file's
write lock serializes the claims.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    update,
)

from core.store.models import Conversation, InboundEvent, InboxLease, utcnow
from core.store.pipelined import CLAIM_KEYS
from core.store.store import Fence, Store, extend_lease
from core.store.tables import _SET_REPLY_REF

__all__ = ["Claim", "InboxStore", "QueuedEvent"]

_evt: Table = InboundEvent.__table__  # type: ignore[assignment]
_lease: Table = InboxLease.__table__  # type: ignore[assignment]
_conv: Table = Conversation.__table__  # type: ignore[assignment]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEASED_CACHE_SIZE = 10_000  # conversation keys remembered to have a lease row
WAITING = ("received", "processing")
_EVENT_COLUMNS = ("platform", "event_id", "status", "received_at", "scope_key", "payload",
                  "attempts", "available_at", "sort_key")
# models.WAITING_SQL as an expression, its values written out (not bound) so that the
# database uses the partial index ix_inbound_events_waiting: the claim and next_due then
# read only the events still waiting, however many were answered before.
_WAITING = and_(_evt.c.status.in_([literal_column(f"'{s}'") for s in WAITING]),
                _evt.c.scope_key.is_not(None))

# Built once, executed with parameters: building a statement costs more than SQLite
# takes to run it (the claim took ~0.9 ms on SQLite when it built its six per call).

# The claim's: keys with due events and a free lease, oldest first. Due when its last
# waiting event is: an album's items (each delayed by the gathering time) are taken
# together, once the album is quiet.
_FIRST = func.min(_evt.c.id)
_DUE = (select(_evt.c.platform, _evt.c.scope_key, _FIRST)
        .join(_lease, and_(_lease.c.platform == _evt.c.platform,
                           _lease.c.scope_key == _evt.c.scope_key))
        .where(_WAITING, _lease.c.expires_at <= bindparam("p_now"))
        .group_by(_evt.c.platform, _evt.c.scope_key)
        .having(func.max(_evt.c.available_at) <= bindparam("p_now"))
        .order_by(_FIRST)
        .limit(bindparam("p_limit")))
_DUE_OF = _DUE.where(_evt.c.platform.in_(bindparam("p_platforms", expanding=True)))
_FREE_KEYS = (select(_lease.c.platform, _lease.c.scope_key)
              .where(tuple_(_lease.c.platform, _lease.c.scope_key)
                     .in_(bindparam("p_keys", expanding=True)),
                     _lease.c.expires_at <= bindparam("p_now"))
              .with_for_update(skip_locked=True))
_TAKE_LEASE = (update(_lease)
               .where(_lease.c.platform == bindparam("p_platform"),
                      _lease.c.scope_key == bindparam("p_scope"),
                      _lease.c.expires_at <= bindparam("p_now"))
               .values(owner=bindparam("p_owner"), expires_at=bindparam("p_until")))
_WAITING_OF_KEY = (select(_evt.c.id, _evt.c.event_id, _evt.c.payload, _evt.c.attempts,
                          _evt.c.message_id, _evt.c.sort_key, _evt.c.shown)
                   .where(_evt.c.platform == bindparam("p_platform"),
                          _evt.c.scope_key == bindparam("p_scope"), _WAITING)
                   # The platform's order (Slack ts, Telegram date and message id), not
                   # the order replicas happened to record the events in.
                   .order_by(func.coalesce(_evt.c.sort_key, ""), _evt.c.id)
                   .limit(bindparam("p_limit")))
_PROCESS_EVENTS = (update(_evt).where(_evt.c.id.in_(bindparam("p_ids", expanding=True)))
                   .values(status="processing", lease_owner=bindparam("p_owner"),
                           attempts=_evt.c.attempts + 1))
_ABANDON_EVENTS = (update(_evt).where(_evt.c.id.in_(bindparam("p_ids", expanding=True)))
                   .values(status="failed", finished_at=bindparam("p_now"),
                           lease_owner=bindparam("p_owner"), payload=None))

# The others'.
_KNOWN_KEY = select(or_(
    exists().where(_conv.c.platform == bindparam("p_platform"),
                   _conv.c.scope_key == bindparam("p_scope")),
    exists().where(_evt.c.platform == bindparam("p_platform"),
                   _evt.c.scope_key == bindparam("p_scope")),
))
_FREE_LEASE = (update(_lease)
               .where(_lease.c.platform == bindparam("p_platform"),
                      _lease.c.scope_key == bindparam("p_scope"),
                      _lease.c.owner == bindparam("p_owner"))
               .values(owner=None, expires_at=EPOCH))
_OPEN_EVENTS = and_(_evt.c.id.in_(bindparam("p_ids", expanding=True)),
                    _evt.c.status == "processing", _evt.c.lease_owner == bindparam("p_owner"))
# A closed event's payload is no longer needed: the person's words are in the
# conversation if they were answered, and nowhere if they were not.
_CLOSE_EVENTS = (update(_evt).where(_OPEN_EVENTS)
                 .values(status=bindparam("p_status"), finished_at=bindparam("p_now"),
                         payload=None))
_RETRY_UNANSWERED = (update(_evt).where(_OPEN_EVENTS, _evt.c.message_id.is_not(None))
                     .values(status="received", lease_owner=None))
_PUT_BACK_EVENTS = (update(_evt).where(_OPEN_EVENTS)
                    .values(status="received", lease_owner=None,
                            attempts=_evt.c.attempts - 1))
_KEY_WAITING = select(exists().where(_evt.c.platform == bindparam("p_platform"),
                                    _evt.c.scope_key == bindparam("p_scope"), _WAITING))
_NEXT_DUE = select(func.min(_evt.c.available_at)).where(_WAITING)
_NEXT_DUE_OF = _NEXT_DUE.where(_evt.c.platform.in_(bindparam("p_platforms", expanding=True)))


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One inbound event as the adapter recorded it."""

    id: int
    event_id: str
    payload: Mapping[str, Any]
    attempts: int  # counting this one
    message_id: int | None = None  # the user message an earlier attempt stored
    sort_key: str | None = None  # the platform's order, as the adapter gave it
    shown: tuple[str, ...] = ()  # reply messages an earlier attempt showed (platform ids)


@dataclass(frozen=True, slots=True)
class Claim:
    """A conversation key's waiting events, taken by one worker, oldest first."""

    platform: str
    scope: str
    events: tuple[QueuedEvent, ...]
    abandoned: tuple[QueuedEvent, ...] = ()  # tried too often: marked failed, not retried
    owner: str = ""
    lease_seconds: float = 0.0
    # (event id, platform ref) of answers whose message appeared only after they were
    # stored: written when the claim is released, in the same statement (issue 11).
    replies: list[tuple[str, str]] = field(default_factory=list, compare=False)

    def note_reply(self, event_id: str, ref: str) -> bool:
        """Have ``release`` store where the answer to ``event_id`` is (``False``: a
        hand-made claim, which is never released; store it yourself)."""
        if not self.owner:
            return False
        self.replies.append((event_id, ref))
        return True

    @property
    def fence(self) -> Fence | None:
        """The lease the turn's writes must still hold (none for a hand-made claim)."""
        return Fence(self.platform, self.scope, self.owner, self.lease_seconds) \
            if self.owner else None


def _shown(raw: str | None) -> tuple[str, ...]:
    """The platform message ids an earlier attempt showed (``[]`` if unreadable)."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _payload(raw: str | None) -> Mapping[str, Any]:
    """The stored JSON; ``{}`` if it cannot be read (the adapter then skips the event)."""
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class InboxStore:
    """The inbox's statements, run through the ``Store``'s transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Keys whose inbox_leases row exists (this process made sure of it): their next
        # events need no lease upsert. Lease rows are never deleted; code that starts
        # deleting them must forget the key here too.
        self._leased: OrderedDict[tuple[str, str], None] = OrderedDict()
        upsert = store.upsert
        self._insert_event = (upsert(_evt)
                              .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                              .returning(_evt.c.id))
        self._insert_lease = (upsert(_lease).values(owner=None, expires_at=EPOCH)
                              .on_conflict_do_nothing(index_elements=["platform", "scope_key"]))
        # PostgreSQL: the event and (for a new event) its key's lease row in ONE statement,
        # sent without BEGIN/COMMIT: one round trip (issue 11).
        self._record = None
        if store.pipelined:
            new_event = (upsert(_evt)
                         .values({c: bindparam(c, type_=_evt.c[c].type) for c in _EVENT_COLUMNS})
                         .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                         .returning(_evt.c.id, _evt.c.platform, _evt.c.scope_key)
                         .cte("new_event"))
            new_lease = (upsert(_lease)
                         .from_select(["platform", "scope_key", "owner", "expires_at"],
                                      select(new_event.c.platform, new_event.c.scope_key,
                                             null(), literal(EPOCH, _lease.c.expires_at.type)))
                         .on_conflict_do_nothing(index_elements=["platform", "scope_key"])
                         .cte("new_lease"))
            self._record = select(new_event.c.id).add_cte(new_lease)
        # PostgreSQL: freeing the lease and noting where the answer is, one statement.
        # and whether more events wait under the key.
        self._free_and_look = self._free_with_ref = None
        if store.pipelined:
            # (NULL and the epoch written into the statement: a None value bound inside a
            # CTE is taken for a missing parameter.)
            freed = (update(_lease)
                     .where(_lease.c.platform == bindparam("p_platform"),
                            _lease.c.scope_key == bindparam("p_scope"),
                            _lease.c.owner == bindparam("p_owner"))
                     .values(owner=null(),
                             expires_at=literal_column("'1970-01-01T00:00:00+00:00'")))
            self._free_and_look = _KEY_WAITING.add_cte(freed.cte("freed"))
            self._free_with_ref = self._free_and_look.add_cte(
                _SET_REPLY_REF.cte("reply_ref"))

    async def enqueue(
        self, *, platform: str, event_id: str, scope: str, payload: Mapping[str, Any],
        delay: float = 0.0, if_known: bool = False, sort_key: str | None = None,
    ) -> bool:
        """Record an event to be answered; ``False`` if it was recorded before (or, with
        ``if_known``, if nothing was ever said under ``scope``: not ours to answer).
        ``sort_key``: the platform's order of the event; a batch is taken in that order."""
        # ASCII JSON: a lone surrogate or NUL in a payload stays an escape, storable anywhere.
        body = json.dumps(payload, separators=(",", ":"))
        key = {"p_platform": platform, "p_scope": scope}
        leased = (platform, scope) in self._leased

        def row() -> dict[str, Any]:
            now = utcnow()
            return {
                "platform": platform, "event_id": event_id, "status": "received",
                "received_at": now, "scope_key": scope, "payload": body, "attempts": 0,
                "available_at": now + timedelta(seconds=delay), "sort_key": sort_key,
            }

        def work(conn: Connection) -> bool:
            if if_known and not conn.scalar(_KNOWN_KEY, key):
                return False
            new = conn.execute(self._insert_event, row()).scalar_one_or_none()
            if new is None:
                return False
            if not leased:
                conn.execute(self._insert_lease, {"platform": platform, "scope_key": scope})
            return True

        def one(conn: Connection) -> bool:
            record = self._insert_event if leased or self._record is None else self._record
            return conn.execute(record, row()).scalar_one_or_none() is not None

        # One statement (PostgreSQL, or a key with a lease row): no transaction around it.
        # Repeated after a lost connection, an insert that did commit finds its row and
        # says "seen before": the event is in the inbox all the same (the poll claims it).
        if not if_known and (leased or self._record is not None):
            recorded = await self._store.run_one(one, "record the message")
        else:
            recorded = await self._store.run(work, "record the message")
        if recorded:  # committed: the lease row is there
            self._leased[(platform, scope)] = None
            self._leased.move_to_end((platform, scope))
            while len(self._leased) > LEASED_CACHE_SIZE:
                self._leased.popitem(last=False)
        return recorded

    async def claim(
        self, *, owner: str, lease_seconds: float, limit: int, max_batch: int = 20,
        max_attempts: int = 5, platforms: Collection[str] | None = None,
        busy: Collection[tuple[str, str]] = (),
    ) -> list[Claim]:
        """Take up to ``limit`` conversation keys that have due events and a free lease
        (only ``platforms``' keys, if given: those this worker can answer), never one of
        ``busy`` (keys the caller is answering now, whose lease may have run out while
        the database was away: the owner name is the same, so nothing else would stop a
        second turn)."""

        if self._store.pipelined and platforms is not None:
            return await self._claim_at_once(owner=owner, lease_seconds=lease_seconds,
                                             limit=limit, max_batch=max_batch,
                                             max_attempts=max_attempts,
                                             platforms=platforms, busy=busy)

        locking = self._store.engine.dialect.name != "sqlite"

        def work(conn: Connection) -> list[Claim]:
            now = utcnow()
            # Only keys whose lease is free: held keys must not crowd free ones out of
            # the LIMIT (they would, for as long as their turns run).
            due = (conn.execute(_DUE, {"p_now": now, "p_limit": limit * 4})
                   if platforms is None else
                   conn.execute(_DUE_OF, {"p_now": now, "p_limit": limit * 4,
                                          "p_platforms": list(platforms)})).all()
            if not due:
                return []
            order = {(r[0], r[1]): r[2] for r in due if (r[0], r[1]) not in busy}
            if not order:
                return []
            if locking:
                free = [(r[0], r[1]) for r in conn.execute(
                    _FREE_KEYS, {"p_keys": list(order), "p_now": now})]
            else:  # SQLite: nothing to lock; _DUE found them free and _TAKE_LEASE checks
                free = list(order)
            keys = sorted(free, key=order.__getitem__)[:limit]
            until = now + timedelta(seconds=lease_seconds)
            claims = []
            for platform, scope in keys:
                # Still free? On SQLite the SELECTs above ran outside the write transaction
                # (pysqlite begins it at the first UPDATE), so another connection may have
                # taken the key since; on PostgreSQL the row lock makes this always true.
                taken = conn.execute(_TAKE_LEASE, {
                    "p_platform": platform, "p_scope": scope, "p_now": now,
                    "p_owner": owner, "p_until": until})
                if not taken.rowcount:
                    continue
                rows = conn.execute(_WAITING_OF_KEY, {
                    "p_platform": platform, "p_scope": scope, "p_limit": max_batch}).all()
                events = [QueuedEvent(r.id, r.event_id, _payload(r.payload), r.attempts + 1,
                                      r.message_id, r.sort_key, _shown(r.shown))
                          for r in rows]
                live = tuple(e for e in events if e.attempts <= max_attempts)
                dead = tuple(e for e in events if e.attempts > max_attempts)
                if live:
                    conn.execute(_PROCESS_EVENTS, {"p_ids": [e.id for e in live],
                                                   "p_owner": owner})
                if dead:
                    conn.execute(_ABANDON_EVENTS, {"p_ids": [e.id for e in dead],
                                                   "p_owner": owner, "p_now": now})
                claims.append(Claim(platform, scope, live, dead, owner, lease_seconds))
            return claims

        return await self._store.run(work, "claim inbound events")

    async def _claim_at_once(
        self, *, owner: str, lease_seconds: float, limit: int, max_batch: int,
        max_attempts: int, platforms: Collection[str], busy: Collection[tuple[str, str]],
    ) -> list[Claim]:
        """``claim`` on PostgreSQL: one statement (``pipelined.CLAIM_KEYS``), one round
        trip. Repeated after a lost connection, a claim that did commit leaves its keys
        leased to us until the lease expires (then any replica takes them)."""
        now = utcnow()
        params = {"p_now": now, "p_until": now + timedelta(seconds=lease_seconds),
                  "p_platforms": list(platforms), "p_busy": [f"{p}/{s}" for p, s in busy],
                  "p_scan": limit * 4, "p_limit": limit, "p_batch": max_batch,
                  "p_max_attempts": max_attempts, "p_owner": owner}

        def one(conn: Connection) -> list[Claim]:
            keys: dict[tuple[str, str], list[QueuedEvent]] = {}
            for r in conn.execute(CLAIM_KEYS, params):
                keys.setdefault((r.platform, r.scope_key), []).append(QueuedEvent(
                    r.id, r.event_id, _payload(r.payload), r.attempts + 1, r.message_id,
                    r.sort_key, _shown(r.shown)))
            return [Claim(platform, scope,
                          tuple(e for e in events if e.attempts <= max_attempts),
                          tuple(e for e in events if e.attempts > max_attempts),
                          owner, lease_seconds)
                    for (platform, scope), events in keys.items()]

        return await self._store.run_one(one, "claim inbound events")

    async def renew(self, *, platform: str, scope: str, owner: str,
                    lease_seconds: float) -> bool:
        """Extend a held lease; ``False`` if it is no longer ours."""
        fence = Fence(platform, scope, owner, lease_seconds)
        return await self._store.run_one(lambda conn: extend_lease(conn, fence),
                                         "renew a lease")

    async def release(self, claim: Claim, *, owner: str, status: str = "done") -> bool:
        """Give the key back. Its events still open are closed as ``done`` or ``failed``
        — or, as ``received`` (shutdown), put back to be claimed at once by any replica;
        a hand-back is not counted as an attempt (only dying in a turn is).

        ``done`` closes only events no turn started on (commands, what was skipped): one
        whose user message was stored but whose turn did not store its end (the database
        failed) goes back to the inbox instead, as an attempt, so it is not lost.

        Returns whether events wait under the key after it (the caller claims again only
        then, rather than after every turn)."""
        # Events a finish_turn of this process closed need nothing more (every statement
        # below skips closed events): usually all of them, and the release is then one
        # statement without a transaction around it.
        finished = self._store.take_finished(claim.platform, [e.event_id for e in claim.events])
        ids = [e.id for e in claim.events if e.event_id not in finished]
        lease = {"p_platform": claim.platform, "p_scope": claim.scope, "p_owner": owner}
        replies = list(claim.replies)

        def refs(conn: Connection) -> None:
            for event_id, ref in replies:
                conn.execute(_SET_REPLY_REF, {"p_event": event_id,
                                              "p_platform": claim.platform, "p_ref": ref})

        def more(conn: Connection) -> bool:
            return bool(conn.scalar(_KEY_WAITING, lease))

        look, look_ref = self._free_and_look, self._free_with_ref
        if not ids and not replies and look is not None:
            # PostgreSQL: one statement, no transaction (issue 11).
            return await self._store.run_one(lambda conn: bool(conn.scalar(look, lease)),
                                             "release a lease")
        if not ids and len(replies) == 1 and look_ref is not None:
            event_id, ref = replies[0]
            return await self._store.run_one(
                lambda conn: bool(conn.scalar(look_ref, {
                    **lease, "p_event": event_id, "p_ref": ref})), "release a lease")

        def work(conn: Connection) -> bool:
            # The lease row first, as claim/begin_turn/finish_turn lock it: one lock order.
            conn.execute(_FREE_LEASE, lease)
            refs(conn)
            if ids:
                if status == "received":
                    conn.execute(_PUT_BACK_EVENTS, {"p_ids": ids, "p_owner": owner})
                else:
                    if status == "done":
                        # A message stored whose answer was not (the turn's end could not
                        # be written): back to the inbox, with its payload, not closed.
                        conn.execute(_RETRY_UNANSWERED, {"p_ids": ids, "p_owner": owner})
                    conn.execute(_CLOSE_EVENTS, {"p_ids": ids, "p_owner": owner,
                                                 "p_status": status, "p_now": utcnow()})
            return more(conn)

        return await self._store.run(work, "release a lease")

    async def next_due(self, platforms: Collection[str] | None = None) -> datetime | None:
        """When the soonest waiting event (of ``platforms``, if given) becomes due
        (``None``: nothing waits). Events being processed count as waiting (and due):
        they are not answered yet."""

        def work(conn: Connection) -> datetime | None:
            value: datetime | str | None = (
                conn.scalar(_NEXT_DUE) if platforms is None
                else conn.scalar(_NEXT_DUE_OF, {"p_platforms": list(platforms)}))
            if isinstance(value, str):  # SQLite's aggregate returns the stored text
                value = datetime.fromisoformat(value)
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value

        return await self._store.run_one(work, "look at the inbox")

    async def held_by(self, owner: str) -> int:
        """How many keys ``owner`` holds (for tests and shutdown logs)."""

        def work(conn: Connection) -> int:
            return int(conn.scalar(select(func.count()).select_from(_lease)
                                   .where(_lease.c.owner == owner,
                                          _lease.c.expires_at > literal(utcnow()))) or 0)

        return await self._store.run(work, "count leases")
