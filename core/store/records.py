"""The store's small reads and writes outside a turn: scopes, events, feedback, usage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    and_,
    case,
    func,
    literal,
    select,
    update,
)

from core.store.base import StoreBase
from core.store.models import (
    utcnow,
)
from core.store.tables import (
    _PING,
    _SET_REPLY_REF,
    UsageRow,
    _conv,
    _evt,
    _fb,
    _msg,
    _scope,
    _tools,
)


class Records(StoreBase):
    """Conversation keys, recorded events, feedback, model choices and usage."""

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
        estimate where it reported none (counted in ``estimated``). A user message whose
        recordings a speech model transcribed carries that call's model and tokens: they
        count too (as no turn of their own).
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
        is_turn = answer.c.role == "assistant"
        calls = case((is_turn, select(func.count()).select_from(_tools)
                      .where(_tools.c.message_id == question.c.id).scalar_subquery()),
                     else_=0)
        query = (
            select(
                key,
                func.sum(case((is_turn, 1), else_=0)).label("turns"),
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
            .where(is_turn | ((answer.c.role == "user") & answer.c.model.is_not(None)
                              & answer.c.prompt_tokens.is_not(None)),
                   answer.c.created_at >= since)
            .group_by(key, keys["model"])
            .order_by(func.coalesce(func.sum(answer.c.prompt_tokens), 0)
                      + func.coalesce(func.sum(answer.c.completion_tokens), 0), key)
        )

        def work(conn: Connection) -> list[UsageRow]:
            return [UsageRow(str(r.key), int(r.turns or 0), int(r.failed or 0), int(r.prompt),
                             int(r.completion), int(r.estimated or 0),
                             tool_calls=int(r.tool_calls), cached_tokens=int(r.cached),
                             cache_creation_tokens=int(r.created), model=str(r.model))
                    for r in conn.execute(query)]

        rows = await self._tx(work, "read usage")
        rows.reverse()
        return rows
