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

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    select,
    update,
)

from core.errors import LeaseLost
from core.limits import LimitHit, Rule, window_end, window_start
from core.store.context import ContextReads
from core.store.models import (
    utcnow,
)
from core.store.pipelined import ADD_USER_MESSAGE, BEGIN_READ, FINISH_ANSWER
from core.store.records import Records
from core.store.summaries import MemoryRow
from core.store.tables import (
    _CLOSE_EVENT,
    _INSERT_LINK,
    _INSERT_MESSAGE,
    _SELECT_OPEN,
    _SET_EVENT_MESSAGE,
    _TOUCH_CONVERSATION,
    ContextLimits,
    Fence,
    StoredMessage,
    TurnPart,
    TurnStart,
    UsageRow,
    _evt,
    _hold,
    _refs,
    _usage,
    extend_lease,
)
from core.types import Author, Image, Usage, Video

__all__ = ["ContextLimits", "Fence", "Store", "StoredMessage", "TurnPart", "TurnStart", "UsageRow",
           "extend_lease"]


_NOTE_SHOWN = (update(_evt)
               .where(_evt.c.platform == bindparam("p_platform"),
                      _evt.c.event_id.in_(bindparam("p_events", expanding=True)),
                      _evt.c.status.in_(("received", "processing")))
               .values(shown=bindparam("p_shown")))

_OF_EVENTS = and_(_evt.c.platform == bindparam("p_platform"),
                  _evt.c.event_id.in_(bindparam("p_events", expanding=True)))
_TURN_EVENTS = select(_evt.c.event_id, _evt.c.status, _evt.c.shown).where(_OF_EVENTS)
_STORED_PARTS = select(_evt.c.event_id, _evt.c.message_id).where(
    _OF_EVENTS, _evt.c.message_id.is_not(None))


class Store(ContextReads, Records):
    """Conversation memory in SQL (SQLite or PostgreSQL)."""

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

        if self.pipelined and queued and fence is not None \
                and not any(p.images or p.videos for p in parts):
            return await self._tx(lambda conn: self._begin_queued(
                conn, platform=platform, scope=scope, profile=profile, parts=parts,
                fence=fence, context=context, limits=limits), "record the message")

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
            # (new: opened just now, so no summary and no tool calls to read)
            conv_id, conv_profile, new = self._open_conversation(conn, platform, scope,
                                                                 profile)
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
                        videos=part.videos, model=part.model, usage=part.usage,
                    )
                    if queued:
                        conn.execute(_SET_EVENT_MESSAGE, {
                            "p_platform": platform, "p_event": part.event_id,
                            "p_message": message_id})
            return self._started(conn, platform=platform, scope=scope, parts=parts,
                                 conv=(conv_id, conv_profile, new), message_id=message_id,
                                 fresh=fresh, fence=fence, context=context, limits=limits)

        return await self._tx(work, "record the message")

    def _begin_queued(
        self, conn: Connection, *, platform: str, scope: str, profile: str | None,
        parts: Sequence[TurnPart], fence: Fence, context: ContextLimits | None,
        limits: tuple[Rule, ...],
    ) -> TurnStart:
        """``begin_turn`` of a queued turn on PostgreSQL, in a few round trips (issue 11):
        the fence, what an earlier attempt stored, the open conversation and its memory
        in one statement (``pipelined.BEGIN_READ``); each new user message and its
        event's link in one more; then the context window (and tool calls)."""
        now = utcnow()
        row = conn.execute(BEGIN_READ, {
            "p_until": now + timedelta(seconds=fence.lease_seconds), "p_platform": platform,
            "p_scope": scope, "p_owner": fence.owner,
            "p_events": [p.event_id for p in parts]}).one()
        if not row.held:
            raise LeaseLost(f"lease on {fence.platform} {fence.scope} lost")
        # What an earlier attempt stored, as the database has it now: a retried
        # begin_turn whose COMMIT was not confirmed must not store a message twice.
        pairs = json.loads(row.stored) if isinstance(row.stored, str) else row.stored or ()
        known = {str(e): int(m) for e, m in pairs}  # (asyncpg decodes JSON itself)
        memory: MemoryRow | None = None
        if row.id is None:
            conv_id, conv_profile, new = self._open_conversation(
                conn, platform, scope, profile, known_absent=True)
        else:
            conv_id, conv_profile, new = int(row.id), row.profile, False
            if row.has_memory is not None:
                memory = MemoryRow(row.summary or "", int(row.summary_tokens or 0),
                                   int(row.covers_message_id or 0), int(row.epoch or 0),
                                   row.updated_at)
        message_id = 0
        fresh = False
        for part in parts:
            message_id = known.get(part.event_id) or part.message_id or 0
            if not message_id:
                fresh = True
                usage = part.usage
                message_id = int(conn.execute(ADD_USER_MESSAGE, {
                    "m_conversation_id": conv_id, "m_role": "user",
                    "m_author_id": part.author.id, "m_author_name": part.author.name,
                    "m_text": part.text, "m_reasoning": None, "m_model": part.model,
                    "m_token_count": part.token_count, "m_image_count": 0, "m_video_count": 0,
                    # (a transcribed message carries its speech call's usage)
                    "m_prompt_tokens": usage.prompt_tokens if usage else None,
                    "m_completion_tokens": usage.completion_tokens if usage else None,
                    "m_usage_estimated": usage.estimated if usage else None,
                    "m_cached_tokens": None,
                    "m_cache_creation_tokens": None, "m_latency_ms": None, "m_status": "ok",
                    "m_error": None, "m_event_id": part.event_id, "m_sort_key": part.sort_key,
                    "m_created_at": utcnow(), "p_platform": platform}).scalar_one())
        return self._started(conn, platform=platform, scope=scope, parts=parts,
                             conv=(conv_id, conv_profile, new), message_id=message_id,
                             fresh=fresh, fence=fence, context=context, limits=limits,
                             memory=memory)

    def _started(
        self, conn: Connection, *, platform: str, scope: str, parts: Sequence[TurnPart],
        conv: tuple[int, str | None, bool], message_id: int, fresh: bool, fence: Fence | None,
        context: ContextLimits | None, limits: tuple[Rule, ...],
        memory: MemoryRow | bool | None = True,
    ) -> TurnStart:
        """The end of either ``begin_turn`` path: the turn counted against ``limits`` (when
        its messages are new) and, unless refused, its context loaded. ``conv``: the
        conversation's id, profile and whether it was opened just now."""
        conv_id, conv_profile, new = conv
        last = parts[-1]
        event_ids = tuple(p.event_id for p in parts)
        subjects = {"user": f"user:{last.author.id}", "conversation": f"conversation:{scope}"}
        hit = self._charge(conn, platform, subjects, limits) if limits and fresh else None
        if hit is not None:
            return TurnStart(conv_id, message_id, conv_profile, limited=hit,
                             event_ids=event_ids, fence=fence)
        history = (None if context is None else tuple(self._context(
            conn, conv_id, context, message_id, memory=memory, new=new)))
        quota = tuple(sorted({subjects[r.subject] for r in limits if r.measure == "tokens"}))
        return TurnStart(conv_id, message_id, conv_profile, history, quota_subjects=quota,
                         event_ids=event_ids, fence=fence)

    @staticmethod
    def _stored_parts(conn: Connection, platform: str, parts: Sequence[TurnPart]
                      ) -> dict[str, int]:
        """The user messages already stored for these queued events, by event id."""
        rows = conn.execute(_STORED_PARTS, {"p_platform": platform,
                                            "p_events": [p.event_id for p in parts]})
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
        self, conn: Connection, platform: str, scope: str, profile: str | None,
        known_absent: bool = False,
    ) -> tuple[int, str | None, bool]:
        """The open conversation under the key, opened if there is none: id, profile and
        whether this transaction opened it."""
        key = {"p_platform": platform, "p_scope": scope}
        row = None if known_absent else conn.execute(_SELECT_OPEN, key).first()
        if row is None:
            now = utcnow()
            row = conn.execute(self._open_new, {
                "platform": platform, "scope_key": scope, "profile": profile, "status": "open",
                "created_at": now, "updated_at": now,
            }).first()  # (None: another transaction opened it just now)
            if row is None:
                row = conn.execute(_SELECT_OPEN, key).one()
                return int(row.id), row.profile, False
            return int(row.id), row.profile, True
        return int(row.id), row.profile, False

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
        videos: Sequence[Video] = (),
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
            "video_count": len(videos),
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
        # Images first, then each video's frames (marked with the video's number and rate)
        # and, when it is sent whole, its file (the video's number, no rate).
        linked: list[tuple[Image, int | None, float | None]] = [
            (image, None, None) for image in images]
        for number, video in enumerate(videos, 1):
            linked += [(frame, number, video.fps) for frame in video.frames]
            if video.file is not None:
                linked.append((video.file, number, None))
        for position, (image, video_number, fps) in enumerate(linked):
            conn.execute(self._insert_attachment, {
                "sha256": image.sha256, "mime": image.mime, "size": image.size,
                "width": image.width, "height": image.height, "data": image.data,
                "created_at": utcnow(),
            })
            conn.execute(_INSERT_LINK, {"message_id": message_id, "position": position,
                                        "sha256": image.sha256, "video": video_number,
                                        "fps": fps})
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

        closes = start.event_ids or (event_id,)
        fence = start.fence
        spent = usage.total_tokens if usage else 0
        if self.pipelined and fence is not None and also is None and not (
                spent and start.quota_subjects):
            # PostgreSQL, the usual answer: one statement, one round trip (issue 11).
            now = utcnow()
            answer = {
                "m_conversation_id": start.conversation_id, "m_role": "assistant",
                "m_author_id": None, "m_author_name": None, "m_text": text,
                "m_reasoning": reasoning or None, "m_model": model, "m_token_count": token_count,
                "m_image_count": 0, "m_video_count": 0,
                "m_prompt_tokens": usage.prompt_tokens if usage else None,
                "m_completion_tokens": usage.completion_tokens if usage else None,
                "m_usage_estimated": usage.estimated if usage else None,
                "m_cached_tokens": usage.cached_tokens if usage else None,
                "m_cache_creation_tokens": usage.cache_creation_tokens if usage else None,
                "m_latency_ms": latency_ms, "m_status": status, "m_error": error,
                "m_event_id": event_id, "m_sort_key": None, "m_created_at": now,
                "p_platform": platform, "p_scope": fence.scope, "p_owner": fence.owner,
                "p_until": now + timedelta(seconds=fence.lease_seconds),
                "p_closes": list(closes), "p_status": "failed" if status == "failed" else "done",
            }

            def one(conn: Connection) -> int:
                stored, held = conn.execute(FINISH_ANSWER, answer).one()
                if not held:
                    raise LeaseLost(f"lease on {fence.platform} {fence.scope} lost")
                return int(stored or 0)  # 0: stored by an attempt not confirmed

            message_id = await self.run_one(one, "store the answer")
            self._mark_finished(platform, closes)
            return message_id

        def work(conn: Connection) -> int:
            if start.fence is not None:
                _hold(conn, start.fence)
            rows = conn.execute(_TURN_EVENTS, {"p_platform": platform,
                                               "p_events": list(closes)}).all()
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

        message_id = await self._tx(work, "store the answer")
        if fence is not None:
            self._mark_finished(platform, closes)
        return message_id

    async def note_shown(self, *, platform: str, event_ids: Sequence[str],
                         refs: Sequence[str]) -> None:
        """Remember which platform messages a turn for ``event_ids`` shows (first the one
        the answer starts in), so that a retaken turn edits them instead of posting anew."""
        value = json.dumps(list(refs))

        def work(conn: Connection) -> None:
            conn.execute(_NOTE_SHOWN, {"p_platform": platform, "p_events": list(event_ids),
                                       "p_shown": value})

        # One statement, the same when repeated: no transaction around it (issue 11).
        await self.run_one(work, "remember the reply")
