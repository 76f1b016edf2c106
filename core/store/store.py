"""The conversation store: the only place that knows table rows and ids.

Every method is one short transaction, written once as a plain function over a
SQLAlchemy ``Connection``. On PostgreSQL it runs through the async engine (``run_sync``
over asyncpg). On SQLite, given synchronous engines, a transaction (a fraction of a
millisecond of local file work) first runs directly, with SQLite's busy timeout at zero so
it can never wait on another process's lock; if the file is locked it is rolled back and
run again on the store's own database thread, which may wait. Thread hops cost about half
a millisecond each on small machines (aiosqlite makes several per statement), which is
what this avoids.

Queries that feed the model are bounded (``LIMIT`` over the ``(conversation_id, id)``
index), so a turn costs the same with 10 or 10,000 stored messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import LeaseLost, StoreError
from core.limits import LimitHit, Rule, window_end, window_start
from core.store.models import (
    Attachment,
    Conversation,
    Feedback,
    InboundEvent,
    InboxLease,
    Message,
    MessageAttachment,
    ScopeSetting,
    ToolCallRow,
    UsageCounter,
    utcnow,
)
from core.store.summaries import SUMMARY_ROLE, read_memory
from core.store.toolcalls import StoredTool, attach_tools
from core.types import Author, Image, Usage

__all__ = ["ContextLimits", "Fence", "Store", "StoredMessage", "TurnPart", "TurnStart", "UsageRow"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_conv: Table = Conversation.__table__  # type: ignore[assignment]
_msg: Table = Message.__table__  # type: ignore[assignment]
_att: Table = Attachment.__table__  # type: ignore[assignment]
_link: Table = MessageAttachment.__table__  # type: ignore[assignment]
_evt: Table = InboundEvent.__table__  # type: ignore[assignment]
_fb: Table = Feedback.__table__  # type: ignore[assignment]
_scope: Table = ScopeSetting.__table__  # type: ignore[assignment]
_usage: Table = UsageCounter.__table__  # type: ignore[assignment]
_lease: Table = InboxLease.__table__  # type: ignore[assignment]
_tools: Table = ToolCallRow.__table__  # type: ignore[assignment]

# Built once, executed with parameters: building a statement per call costs more than
# SQLite takes to run it.
_OPEN_KEY = and_(_conv.c.platform == bindparam("p_platform"),
                 _conv.c.scope_key == bindparam("p_scope"), _conv.c.status == "open")
_SELECT_OPEN = select(_conv.c.id, _conv.c.profile).where(_OPEN_KEY)
_INSERT_MESSAGE = insert(_msg).returning(_msg.c.id)
_INSERT_LINK = insert(_link)
_TOUCH_CONVERSATION = (
    update(_conv).where(_conv.c.id == bindparam("p_id")).values(updated_at=bindparam("p_now"))
)
_CLOSE_EVENT = (
    update(_evt)
    .where(_evt.c.platform == bindparam("p_platform"), _evt.c.event_id == bindparam("p_event"))
    .values(status=bindparam("p_status"), finished_at=bindparam("p_now"), payload=None)
)
_SET_EVENT_MESSAGE = (
    update(_evt)
    .where(_evt.c.platform == bindparam("p_platform"), _evt.c.event_id == bindparam("p_event"))
    .values(message_id=bindparam("p_message"))
)
_HOLD_LEASE = (
    update(_lease)
    .where(_lease.c.platform == bindparam("p_platform"),
           _lease.c.scope_key == bindparam("p_scope"), _lease.c.owner == bindparam("p_owner"))
    .values(expires_at=bindparam("p_until"))
)
# By the event's id (ix_messages_event_id); the conversation checked row by row, by its
# key, rather than every conversation of the platform listed first.
_SET_REPLY_REF = (
    update(_msg)
    .where(_msg.c.event_id == bindparam("p_event"), _msg.c.role == "assistant",
           exists().where(_conv.c.id == _msg.c.conversation_id,
                          _conv.c.platform == bindparam("p_platform")))
    .values(platform_ref=bindparam("p_ref"))
)
_CONTEXT = (
    select(_msg.c.id, _msg.c.role, _msg.c.text, _msg.c.author_name, _msg.c.token_count,
           _msg.c.image_count, _msg.c.event_id, _msg.c.sort_key)
    .where(_msg.c.conversation_id == bindparam("p_id"), _msg.c.status != "failed")
    .order_by(_msg.c.id.desc())
    .limit(bindparam("p_limit"))
)
_CONTEXT_AFTER = _CONTEXT.where(_msg.c.id > bindparam("p_after"))
_PING = sql_text("SELECT 1")
RECONNECT_WAITS = (0.1, 0.5)  # seconds before each new attempt after a lost connection
WINDOW_CACHE_SIZE = 512  # conversations whose newest messages SQLite keeps in memory


class StoredMessage(NamedTuple):
    """A message as loaded for the context window (newest last).

    A named tuple, not a frozen dataclass: hundreds are built per turn.
    """

    id: int
    role: str
    text: str
    author_name: str
    token_count: int
    image_count: int
    event_id: str = ""
    images: tuple[Image, ...] = ()
    sort_key: str = ""  # the platform's order of a user message ("" where it has none)
    tools: tuple[StoredTool, ...] = ()  # the turn's tool calls (on its user message)


def extend_lease(conn: Connection, fence: Fence) -> bool:
    """Extend the fence's inbox lease by its length; ``False`` if it is not ours."""
    held = conn.execute(_HOLD_LEASE, {
        "p_platform": fence.platform, "p_scope": fence.scope, "p_owner": fence.owner,
        "p_until": utcnow() + timedelta(seconds=fence.lease_seconds)})
    return bool(held.rowcount)


def _hold(conn: Connection, fence: Fence) -> None:
    """Extend the fence's lease, first thing in a transaction; ``LeaseLost`` if it is not
    ours. The row stays locked until the transaction ends, so no other replica can take
    the conversation in between (on SQLite the write lock does the same)."""
    if not extend_lease(conn, fence):
        raise LeaseLost(f"lease on {fence.platform} {fence.scope} lost")


def _refs(raw: str | None) -> list[str]:
    """The platform message ids in an event's ``shown`` column."""
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _stored(row: Any) -> StoredMessage:
    ident, role, text, name, tokens, image_count, event_id, sort_key = row
    return StoredMessage(ident, role, text, name or "", tokens, image_count, event_id or "",
                         sort_key=sort_key or "")


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of ``chatbridge usage``."""

    key: str
    turns: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    estimated: int = 0  # turns whose tokens chatbridge estimated (no usage reported)
    tool_calls: int = 0
    cached_tokens: int = 0  # of prompt_tokens: read from the provider's context cache
    cache_creation_tokens: int = 0  # of prompt_tokens: written into it
    model: str = ""  # the answers' model (rows come per key and model)


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What ``begin_turn`` recorded: the open conversation and the user's message.

    ``history`` is filled when the caller asked for the context in the same transaction.
    """

    conversation_id: int
    message_id: int
    profile: str | None
    history: tuple[StoredMessage, ...] | None = None
    limited: LimitHit | None = None
    quota_subjects: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()  # the inbound events this turn answers
    fence: Fence | None = None


class Fence(NamedTuple):
    """The inbox lease a queued turn runs under; its writes check (and extend) it."""

    platform: str
    scope: str
    owner: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class TurnPart:
    """One user message of a turn (a turn answers several when they waited together)."""

    event_id: str
    author: Author
    text: str
    token_count: int
    images: tuple[Image, ...] = ()
    message_id: int | None = None  # already stored, by an attempt that did not finish
    sort_key: str | None = None  # the platform's order (Slack ts, Telegram date/id)


@dataclass(frozen=True, slots=True)
class ContextLimits:
    """How much of a conversation to load for the model."""

    budget_tokens: int
    max_messages: int
    image_turns: int


class Store:
    """Conversation memory in SQL (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sync_engine: Engine | None = None,
        inline_engine: Engine | None = None,
    ) -> None:
        self._engine = engine
        self._sync = sync_engine
        self._inline = inline_engine
        self._windows: OrderedDict[int, tuple[tuple[int, int], list[StoredMessage]]] | None = (
            OrderedDict() if engine.dialect.name == "sqlite" else None
        )
        self._windows_lock = threading.Lock()
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="chatbridge-db") if sync_engine else None
        )
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._insert_event = (
            self._insert(_evt)
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            .returning(_evt.c.id)
        )
        self._insert_conversation = self._insert(_conv).on_conflict_do_nothing(
            index_elements=["platform", "scope_key"], index_where=sql_text("status = 'open'"),
        )
        self._insert_attachment = self._insert(_att).on_conflict_do_nothing(
            index_elements=["sha256"]
        )

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this store uses."""
        return self._engine

    def close(self) -> None:
        """Stop the database thread and close its engine, if any."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        for sync in (self._sync, self._inline):
            if sync is not None:
                sync.dispose()

    def _sync_tx(self, work: Callable[[Connection], T], engine: Engine | None = None) -> T:
        sync = engine or self._sync
        assert sync is not None
        with sync.begin() as conn:
            return work(conn)

    async def run(self, work: Callable[[Connection], T], doing: str) -> T:
        """Run ``work`` in one transaction (for the store's companions, e.g. the inbox)."""
        return await self._tx(work, doing)

    @property
    def upsert(self) -> Callable[[Table], Any]:
        """The dialect's ``insert`` (with ``on_conflict_do_…``)."""
        return self._insert

    async def _server_tx(self, work: Callable[[Connection], T]) -> T:
        """A transaction on a database server; a connection lost before COMMIT is retried
        (twice, soon).

        The failed attempt never committed, so running ``work`` again cannot write twice.
        A failure during COMMIT is not retried: the server may have committed.
        """
        waits = iter(RECONNECT_WAITS)
        while True:
            committing = False
            try:
                async with self._engine.connect() as conn:
                    await conn.begin()
                    result = await conn.run_sync(work)
                    committing = True
                    await conn.commit()
                    return result
            except (DBAPIError, OSError) as err:
                lost = isinstance(err, OSError) or bool(
                    isinstance(err, DBAPIError) and err.connection_invalidated)
                wait = next(waits, None)
                if committing or not lost or wait is None:
                    raise
                log.warning("database connection lost or refused (%s); trying again",
                            type(getattr(err, "orig", None) or err).__name__)
            await asyncio.sleep(wait)

    async def _tx(self, work: Callable[[Connection], T], doing: str) -> T:
        """Run ``work`` in one transaction; database errors become ``StoreError``."""
        try:
            if self._inline is not None:
                try:
                    return self._sync_tx(work, self._inline)
                except OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        raise
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, self._sync_tx, work)
            return await self._server_tx(work)
        except (SQLAlchemyError, OSError) as err:  # asyncpg raises OSError when refused
            raise StoreError(f"could not {doing}: {type(err).__name__}") from err

    async def begin_turn(
        self,
        *,
        platform: str,
        scope: str,
        profile: str | None,
        event_id: str = "",
        author: Author | None = None,
        text: str = "",
        token_count: int = 0,
        images: Sequence[Image] = (),
        parts: Sequence[TurnPart] = (),
        queued: bool = False,
        fence: Fence | None = None,
        context: ContextLimits | None = None,
        limits: tuple[Rule, ...] = (),
    ) -> TurnStart | None:
        """Record the user's message(s) of a turn; ``None`` if the event was seen before.

        One message is given by ``event_id``, ``author``, ``text``…; several (messages
        that waited in the inbox together) by ``parts``, oldest first. ``queued``: the
        events are already in the inbox (claimed by the caller) rather than recorded
        here; a part that has a ``message_id`` was stored by an earlier attempt.
        With ``fence``, nothing is written unless the caller still holds that lease
        (``LeaseLost``); ``finish_turn`` checks it again.
        With ``context``, the conversation's context is loaded in the same transaction.
        With ``limits``, the turn is counted against them; ``TurnStart.limited`` says
        which one it would exceed (the messages are recorded all the same).
        """
        if not parts:
            assert author is not None
            parts = (TurnPart(event_id, author, text, token_count, tuple(images)),)

        def work(conn: Connection) -> TurnStart | None:
            if fence is not None:
                _hold(conn, fence)
            if not queued:
                evt = conn.execute(self._insert_event, {
                    "platform": platform, "event_id": parts[0].event_id,
                    "status": "received", "received_at": utcnow(),
                })
                if evt.scalar_one_or_none() is None:
                    return None
            conv_id, conv_profile = self._open_conversation(conn, platform, scope, profile)
            message_id = 0
            fresh = False
            # What an earlier attempt stored, as the database has it now: a retried
            # begin_turn whose COMMIT was not confirmed must not store a message twice.
            known = self._stored_parts(conn, platform, parts) if queued else {}
            for part in parts:
                message_id = known.get(part.event_id) or part.message_id or 0
                if not message_id:
                    fresh = True
                    message_id = self._add_message(
                        conn, conversation_id=conv_id, role="user", author=part.author,
                        text=part.text, token_count=part.token_count,
                        event_id=part.event_id, images=part.images, sort_key=part.sort_key,
                    )
                    if queued:
                        conn.execute(_SET_EVENT_MESSAGE, {
                            "p_platform": platform, "p_event": part.event_id,
                            "p_message": message_id})
            last = parts[-1]
            event_ids = tuple(p.event_id for p in parts)
            subjects = {"user": f"user:{last.author.id}", "conversation": f"conversation:{scope}"}
            hit = self._charge(conn, platform, subjects, limits) if limits and fresh else None
            if hit is not None:
                return TurnStart(conv_id, message_id, conv_profile, limited=hit,
                                 event_ids=event_ids, fence=fence)
            history = (None if context is None
                       else tuple(self._context(conn, conv_id, context, message_id)))
            quota = tuple(sorted({subjects[r.subject] for r in limits if r.measure == "tokens"}))
            return TurnStart(conv_id, message_id, conv_profile, history, quota_subjects=quota,
                             event_ids=event_ids, fence=fence)

        return await self._tx(work, "record the message")

    @staticmethod
    def _stored_parts(conn: Connection, platform: str, parts: Sequence[TurnPart]
                      ) -> dict[str, int]:
        """The user messages already stored for these queued events, by event id."""
        rows = conn.execute(select(_evt.c.event_id, _evt.c.message_id).where(
            _evt.c.platform == platform, _evt.c.event_id.in_([p.event_id for p in parts]),
            _evt.c.message_id.is_not(None)))
        return {r.event_id: int(r.message_id) for r in rows}

    def _charge(
        self, conn: Connection, platform: str, subjects: dict[str, str],
        rules: tuple[Rule, ...],
    ) -> LimitHit | None:
        """Count one turn in every window a rule watches; the first rule it breaks, if any."""
        now = utcnow()
        counted: dict[tuple[str, str], tuple[int, int, datetime]] = {}
        for rule in rules:
            key = (rule.subject, rule.period)
            if key in counted:
                continue
            start = window_start(rule.period, now)
            stmt = self._insert(_usage).values(
                platform=platform, subject=subjects[rule.subject], period=rule.period,
                window_start=start, turns=1, tokens=0,
            )
            row = conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["platform", "subject", "period", "window_start"],
                    set_={"turns": _usage.c.turns + 1},
                ).returning(_usage.c.turns, _usage.c.tokens)
            ).one()
            counted[key] = (int(row.turns), int(row.tokens), start)
        for rule in rules:
            turns, tokens, start = counted[(rule.subject, rule.period)]
            used = turns if rule.measure == "turns" else tokens
            if used > rule.limit or (rule.measure == "tokens" and used >= rule.limit):
                for (subject, period), (_, _, begun) in counted.items():  # refused: uncount
                    conn.execute(
                        update(_usage)
                        .where(_usage.c.platform == platform,
                               _usage.c.subject == subjects[subject],
                               _usage.c.period == period, _usage.c.window_start == begun)
                        .values(turns=_usage.c.turns - 1)
                    )
                return LimitHit(rule, window_end(rule.period, start))
        return None

    def _open_conversation(
        self, conn: Connection, platform: str, scope: str, profile: str | None
    ) -> tuple[int, str | None]:
        key = {"p_platform": platform, "p_scope": scope}
        row = conn.execute(_SELECT_OPEN, key).first()
        if row is None:
            now = utcnow()
            conn.execute(self._insert_conversation, {
                "platform": platform, "scope_key": scope, "profile": profile, "status": "open",
                "created_at": now, "updated_at": now,
            })
            row = conn.execute(_SELECT_OPEN, key).one()
        return int(row.id), row.profile

    def _add_message(
        self,
        conn: Connection,
        *,
        conversation_id: int,
        role: str,
        author: Author | None,
        text: str,
        token_count: int,
        event_id: str | None = None,
        images: Sequence[Image] = (),
        status: str = "ok",
        error: str | None = None,
        reasoning: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        latency_ms: int | None = None,
        sort_key: str | None = None,
        platform_ref: str | None = None,
    ) -> int:
        result = conn.execute(_INSERT_MESSAGE, {
            "conversation_id": conversation_id,
            "role": role,
            "author_id": author.id if author else None,
            "author_name": author.name if author else None,
            "text": text,
            "reasoning": reasoning or None,
            "model": model,
            "token_count": token_count,
            "image_count": len(images),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "usage_estimated": usage.estimated if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "cache_creation_tokens": usage.cache_creation_tokens if usage else None,
            "latency_ms": latency_ms,
            "status": status,
            "error": error,
            "event_id": event_id,
            "sort_key": sort_key,
            "platform_ref": platform_ref,
            "created_at": utcnow(),
        })
        message_id = int(result.scalar_one())
        for position, image in enumerate(images):
            conn.execute(self._insert_attachment, {
                "sha256": image.sha256, "mime": image.mime, "size": image.size,
                "width": image.width, "height": image.height, "data": image.data,
                "created_at": utcnow(),
            })
            conn.execute(_INSERT_LINK, {"message_id": message_id, "position": position,
                                        "sha256": image.sha256})
        return message_id

    async def finish_turn(
        self,
        start: TurnStart,
        *,
        event_id: str,
        platform: str,
        text: str,
        token_count: int,
        status: str,
        reasoning: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        latency_ms: int | None = None,
        error: str | None = None,
        also: Callable[[Connection, int], None] | None = None,
    ) -> int:
        """Store the assistant's answer (or the failure) and close the inbound events.

        Safe to call again after a failure (a COMMIT not confirmed): if the turn's events
        are closed already, nothing more is written. Where the turn has shown its reply
        (``note_shown``), the answer keeps the first message's platform id (feedback).
        ``also`` runs in the same transaction with the answer's id (its sources…).
        """

        def work(conn: Connection) -> int:
            if start.fence is not None:
                _hold(conn, start.fence)
            closes = start.event_ids or (event_id,)
            rows = conn.execute(select(_evt.c.event_id, _evt.c.status, _evt.c.shown).where(
                _evt.c.platform == platform, _evt.c.event_id.in_(closes))).all()
            if rows and all(r.status in ("done", "failed") for r in rows):
                return 0  # stored by an attempt whose COMMIT we did not see confirmed
            refs = [ref for r in rows if r.event_id == event_id for ref in _refs(r.shown)]
            message_id = self._add_message(
                conn, conversation_id=start.conversation_id, role="assistant", author=None,
                text=text, token_count=token_count, event_id=event_id, status=status,
                error=error, reasoning=reasoning, model=model, usage=usage,
                latency_ms=latency_ms, platform_ref=refs[0] if refs else None,
            )
            now = utcnow()
            conn.execute(_TOUCH_CONVERSATION, {"p_id": start.conversation_id, "p_now": now})
            spent = usage.total_tokens if usage else 0
            for subject in start.quota_subjects if spent else ():
                stmt = self._insert(_usage).values(
                    platform=platform, subject=subject, period="day",
                    window_start=window_start("day", now), turns=0, tokens=spent,
                )
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["platform", "subject", "period", "window_start"],
                    set_={"tokens": _usage.c.tokens + spent},
                ))
            for closed in closes:
                conn.execute(_CLOSE_EVENT, {
                    "p_platform": platform, "p_event": closed, "p_now": now,
                    "p_status": "failed" if status == "failed" else "done",
                })
            if also is not None:
                also(conn, message_id)
            return message_id

        return await self._tx(work, "store the answer")

    async def note_shown(self, *, platform: str, event_ids: Sequence[str],
                         refs: Sequence[str]) -> None:
        """Remember which platform messages a turn for ``event_ids`` shows (first the one
        the answer starts in), so that a retaken turn edits them instead of posting anew."""
        value = json.dumps(list(refs))

        def work(conn: Connection) -> None:
            conn.execute(update(_evt).where(_evt.c.platform == platform,
                                            _evt.c.event_id.in_(list(event_ids)),
                                            _evt.c.status.in_(("received", "processing")))
                         .values(shown=value))

        await self._tx(work, "remember the reply")

    async def load_context(
        self, conversation_id: int, limits: ContextLimits, *, current_id: int | None = None
    ) -> list[StoredMessage]:
        """The newest usable messages that fit the token budget, oldest first.

        Images are loaded for the newest ``image_turns`` user messages that have any;
        older messages keep only their ``image_count``.
        """
        return await self._tx(
            lambda conn: self._context(conn, conversation_id, limits, current_id),
            "load the conversation",
        )

    def _window(
        self, conn: Connection, conversation_id: int, limit: int, epoch: int = 0
    ) -> list[StoredMessage]:
        """The newest ``limit`` usable messages, newest first.

        On SQLite, row ids are assigned under the file's write lock, so a committed row
        never appears below one already seen: the window is kept in memory and only
        newer rows are read, whatever the history's size. PostgreSQL reads it whole.
        """
        params = {"p_id": conversation_id, "p_limit": limit}
        if self._windows is None:
            return [_stored(row) for row in conn.execute(_CONTEXT, params)]
        with self._windows_lock:
            cached = self._windows.get(conversation_id)
        # (epoch: prune/forget deleted messages of the conversation, maybe in another process)
        if cached is not None and cached[0] == (limit, epoch):
            after = cached[1][0].id if cached[1] else 0
            fresh = [_stored(row)
                     for row in conn.execute(_CONTEXT_AFTER, {**params, "p_after": after})]
            window = (fresh + cached[1])[:limit] if fresh else cached[1]
        else:
            window = [_stored(row) for row in conn.execute(_CONTEXT, params)]
        with self._windows_lock:
            self._windows[conversation_id] = ((limit, epoch), window)
            self._windows.move_to_end(conversation_id)
            while len(self._windows) > WINDOW_CACHE_SIZE:
                self._windows.popitem(last=False)
        return window

    def _context(
        self, conn: Connection, conversation_id: int, limits: ContextLimits,
        current_id: int | None = None,
    ) -> list[StoredMessage]:
        """The context for the turn of message ``current_id``, in conversation order.

        User messages newer than the current one wait for their own turn. Each answer
        follows the message it answers (they share the inbound event id), even when a
        second message was recorded while the first was being answered.
        """
        picked: list[StoredMessage] = []
        used = 0
        # The rolling summary stands for the messages it covers (core.memory).
        memory = read_memory(conn, conversation_id)
        covers = memory.covers_message_id if memory else 0
        summary = (StoredMessage(covers, SUMMARY_ROLE, memory.summary, "", memory.summary_tokens,
                                 0) if memory and memory.summary else None)
        budget = limits.budget_tokens - (summary.token_count if summary else 0)
        for message in self._window(conn, conversation_id, limits.max_messages,
                                    memory.epoch if memory else 0):
            if message.id <= covers:
                break
            if current_id is not None and message.role == "user" and message.id > current_id:
                continue
            if picked and used + message.token_count > budget:
                break
            used += message.token_count
            picked.append(message)
        picked = attach_tools(conn, conversation_id, picked, limits.budget_tokens - used)
        recent_turns = [m for m in picked if m.role == "user"][: limits.image_turns]
        with_images = [m.id for m in recent_turns if m.image_count]
        images = self._images_for(conn, with_images) if with_images else {}
        # User messages in the platform's order (their sort key; then as stored), each
        # answer after the message it answers.
        place = {m.event_id: (m.sort_key, m.id) for m in picked
                 if m.role == "user" and m.event_id}
        picked.sort(key=lambda m: (
            (m.sort_key, m.id) if m.role == "user" else place.get(m.event_id, ("", m.id)),
            m.role != "user", m.id))
        if images:
            picked = [m._replace(images=tuple(images[m.id])) if m.id in images else m
                      for m in picked]
        return [summary, *picked] if summary else picked

    @staticmethod
    def _images_for(conn: Connection, message_ids: list[int]) -> dict[int, list[Image]]:
        rows = conn.execute(
            select(_link.c.message_id, _att.c.sha256, _att.c.mime, _att.c.width,
                   _att.c.height, _att.c.data)
            .join(_att, _att.c.sha256 == _link.c.sha256)
            .where(_link.c.message_id.in_(message_ids))
            .order_by(_link.c.message_id, _link.c.position)
        )
        found: dict[int, list[Image]] = {}
        for r in rows:
            found.setdefault(r.message_id, []).append(
                Image(data=r.data, mime=r.mime, width=r.width, height=r.height, sha256=r.sha256)
            )
        return found

    async def reset(self, *, platform: str, scope: str) -> bool:
        """Close the open conversation under this key; the next message opens a new one."""

        def work(conn: Connection) -> bool:
            result = conn.execute(
                update(_conv)
                .where(_conv.c.platform == platform, _conv.c.scope_key == scope,
                       _conv.c.status == "open")
                .values(status="closed", closed_at=utcnow(), updated_at=utcnow())
            )
            return bool(result.rowcount)

        return await self._tx(work, "start a new conversation")

    async def scope_known(self, *, platform: str, scope: str) -> bool:
        """Whether any conversation, open or closed, was ever kept under this key."""

        def work(conn: Connection) -> bool:
            found = conn.execute(
                select(literal(1))
                .select_from(_conv)
                .where(_conv.c.platform == platform, _conv.c.scope_key == scope)
                .limit(1)
            ).first()
            return found is not None

        return await self._tx(work, "look up the conversation")

    async def record_event(self, *, platform: str, event_id: str) -> bool:
        """Record an event that needs no turn, once; ``False`` if it was recorded before."""

        def work(conn: Connection) -> bool:
            now = utcnow()
            evt = conn.execute(self._insert_event, {
                "platform": platform, "event_id": event_id, "status": "done",
                "received_at": now, "finished_at": now,
            })
            return evt.scalar_one_or_none() is not None

        return await self._tx(work, "record the event")

    async def event_recorded(self, *, platform: str, event_id: str) -> bool:
        """Whether an event with this id was ever recorded (reads only)."""

        def work(conn: Connection) -> bool:
            found = conn.execute(
                select(literal(1)).select_from(_evt)
                .where(_evt.c.platform == platform, _evt.c.event_id == event_id).limit(1)
            ).first()
            return found is not None

        return await self._tx(work, "look up the event")

    async def recorded_events(self, *, platform: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` were ever recorded (one indexed read)."""
        if not event_ids:
            return set()

        def work(conn: Connection) -> set[str]:
            rows = conn.execute(
                select(_evt.c.event_id)
                .where(_evt.c.platform == platform, _evt.c.event_id.in_(list(event_ids))))
            return {r[0] for r in rows}

        return await self._tx(work, "look up events")

    async def count_messages(self, *, platform: str, scope: str) -> int:
        """How many messages the open conversation under this key holds."""

        def work(conn: Connection) -> int:
            value = conn.scalar(
                select(func.count(_msg.c.id))
                .join(_conv, _conv.c.id == _msg.c.conversation_id)
                .where(_conv.c.platform == platform, _conv.c.scope_key == scope,
                       _conv.c.status == "open")
            )
            return int(value or 0)

        return await self._tx(work, "count messages")

    async def pending_events(self) -> int:
        """How many inbound events are received but not finished (the inbox depth)."""

        def work(conn: Connection) -> int:
            return int(conn.scalar(
                select(func.count()).select_from(_evt)
                .where(_evt.c.status.in_(("received", "processing")))
            ) or 0)

        return await self._tx(work, "count pending events")

    async def ping(self) -> None:
        """Run ``SELECT 1``; a ``StoreError`` says the database cannot be reached."""
        await self._tx(lambda conn: conn.scalar(_PING), "reach the database")

    async def record_reply_ref(self, *, platform: str, event_id: str, ref: str) -> bool:
        """Remember where the answer to ``event_id`` appears on the platform."""

        def work(conn: Connection) -> bool:
            result = conn.execute(_SET_REPLY_REF, {
                "p_event": event_id, "p_platform": platform, "p_ref": ref})
            return bool(result.rowcount)

        return await self._tx(work, "remember the reply")

    async def record_feedback(
        self, *, platform: str, ref: str, user_id: str, value: str,
        at: datetime | None = None,
    ) -> bool:
        """Store a rating of the answer shown at ``ref``; ``False`` if no such answer.

        ``value``: ``up``, ``down`` or ``none`` (taken back). With ``at`` (when the person
        rated) the newest rating wins, whatever order the ratings arrive in."""

        def work(conn: Connection) -> bool:
            message_id = conn.scalar(
                select(_msg.c.id)
                .join(_conv, _conv.c.id == _msg.c.conversation_id)
                .where(_msg.c.platform_ref == ref, _conv.c.platform == platform)
                .order_by(_msg.c.id.desc())
                .limit(1)
            )
            if message_id is None:
                return False
            stmt = self._insert(_fb).values(message_id=message_id, user_id=user_id,
                                            value=value, created_at=at or utcnow())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["message_id", "user_id"],
                set_={"value": stmt.excluded.value, "created_at": stmt.excluded.created_at},
                where=None if at is None else _fb.c.created_at <= stmt.excluded.created_at,
            ))
            return True

        return await self._tx(work, "store the feedback")

    async def scope_model(self, *, platform: str, scope: str) -> str | None:
        """The model chosen for this conversation key, if any."""
        return await self._tx(
            lambda conn: conn.scalar(
                select(_scope.c.model).where(_scope.c.platform == platform,
                                             _scope.c.scope_key == scope)
            ),
            "read the model choice",
        )

    async def set_scope_model(self, *, platform: str, scope: str, model: str | None) -> None:
        """Choose the model for this conversation key (``None``: the profile's)."""

        def work(conn: Connection) -> None:
            stmt = self._insert(_scope).values(platform=platform, scope_key=scope, model=model,
                                               updated_at=utcnow())
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["platform", "scope_key"],
                set_={"model": stmt.excluded.model, "updated_at": stmt.excluded.updated_at},
            ))

        await self._tx(work, "store the model choice")

    async def usage(self, *, since: datetime, by: str) -> list[UsageRow]:
        """Turns and tokens since ``since``, grouped by ``user``, ``conversation`` or
        ``model``, and within each by model (for the cost).

        A turn is an assistant message; its tokens are what the model reported, or our
        estimate where it reported none (counted in ``estimated``).
        """
        answer = _msg.alias("answer")
        question = _msg.alias("question")
        keys = {
            "model": func.coalesce(answer.c.model, ""),
            "conversation": _conv.c.platform + ":" + _conv.c.scope_key,
            "user": func.coalesce(question.c.author_name, question.c.author_id, ""),
        }
        if by not in keys:
            raise ValueError(f"unknown grouping {by!r}")
        key = keys[by].label("key")
        calls = (select(func.count()).select_from(_tools)
                 .where(_tools.c.message_id == question.c.id).scalar_subquery())
        query = (
            select(
                key,
                func.count().label("turns"),
                func.sum(case((answer.c.status == "failed", 1), else_=0)).label("failed"),
                func.coalesce(func.sum(answer.c.prompt_tokens), 0).label("prompt"),
                func.coalesce(func.sum(answer.c.completion_tokens), 0).label("completion"),
                func.sum(case((answer.c.usage_estimated.is_(True), 1), else_=0)
                         ).label("estimated"),
                func.coalesce(func.sum(calls), 0).label("tool_calls"),
                func.coalesce(func.sum(answer.c.cached_tokens), 0).label("cached"),
                func.coalesce(func.sum(answer.c.cache_creation_tokens), 0).label("created"),
                keys["model"].label("model"),
            )
            .select_from(answer)
            .join(_conv, _conv.c.id == answer.c.conversation_id)
            .join(question, and_(question.c.conversation_id == answer.c.conversation_id,
                                 question.c.event_id == answer.c.event_id,
                                 question.c.role == "user"), isouter=True)
            .where(answer.c.role == "assistant", answer.c.created_at >= since)
            .group_by(key, keys["model"])
            .order_by(func.coalesce(func.sum(answer.c.prompt_tokens), 0)
                      + func.coalesce(func.sum(answer.c.completion_tokens), 0), key)
        )

        def work(conn: Connection) -> list[UsageRow]:
            return [UsageRow(str(r.key), int(r.turns), int(r.failed or 0), int(r.prompt),
                             int(r.completion), int(r.estimated or 0),
                             tool_calls=int(r.tool_calls), cached_tokens=int(r.cached),
                             cache_creation_tokens=int(r.created), model=str(r.model))
                    for r in conn.execute(query)]

        rows = await self._tx(work, "read usage")
        rows.reverse()
        return rows
