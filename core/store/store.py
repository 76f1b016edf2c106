"""The conversation store: the only place that knows table rows and ids.

Every method is one short transaction. Queries that feed the model are bounded
(``LIMIT`` over the ``(conversation_id, id)`` index), so a turn costs the same with
10 or 10,000 stored messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import StoreError
from core.store.models import (
    Attachment,
    Conversation,
    InboundEvent,
    Message,
    MessageAttachment,
    utcnow,
)
from core.types import Author, Image, Usage

__all__ = ["Store", "StoredMessage", "TurnStart"]

_conv: Table = Conversation.__table__  # type: ignore[assignment]
_msg: Table = Message.__table__  # type: ignore[assignment]
_att: Table = Attachment.__table__  # type: ignore[assignment]
_link: Table = MessageAttachment.__table__  # type: ignore[assignment]
_evt: Table = InboundEvent.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What ``begin_turn`` recorded: the open conversation and the user's message."""

    conversation_id: int
    message_id: int
    profile: str | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as loaded for the context window (newest last)."""

    id: int
    role: str
    text: str
    author_name: str
    token_count: int
    image_count: int
    images: tuple[Image, ...] = ()


class Store:
    """Conversation memory in SQL (SQLite or PostgreSQL) through one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store uses."""
        return self._engine

    async def begin_turn(
        self,
        *,
        platform: str,
        scope: str,
        event_id: str,
        profile: str | None,
        author: Author,
        text: str,
        token_count: int,
        images: Sequence[Image] = (),
    ) -> TurnStart | None:
        """Record the inbound event and the user's message; ``None`` if seen before."""
        try:
            async with self._engine.begin() as conn:
                evt = await conn.execute(
                    self._insert(_evt)
                    .values(platform=platform, event_id=event_id, status="received",
                            received_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["platform", "event_id"])
                    .returning(_evt.c.id)
                )
                if evt.scalar_one_or_none() is None:
                    return None
                conv_id, conv_profile = await self._open_conversation(
                    conn, platform, scope, profile
                )
                message_id = await self._add_message(
                    conn,
                    conversation_id=conv_id,
                    role="user",
                    author=author,
                    text=text,
                    token_count=token_count,
                    event_id=event_id,
                    images=images,
                )
                return TurnStart(conv_id, message_id, conv_profile)
        except SQLAlchemyError as err:
            raise StoreError(f"could not record the message: {type(err).__name__}") from err

    async def _open_conversation(
        self, conn: AsyncConnection, platform: str, scope: str, profile: str | None
    ) -> tuple[int, str | None]:
        open_key = and_(
            _conv.c.platform == platform, _conv.c.scope_key == scope, _conv.c.status == "open"
        )
        row = (await conn.execute(select(_conv.c.id, _conv.c.profile).where(open_key))).first()
        if row is None:
            now = utcnow()
            await conn.execute(
                self._insert(_conv)
                .values(platform=platform, scope_key=scope, profile=profile, status="open",
                        created_at=now, updated_at=now)
                .on_conflict_do_nothing(
                    index_elements=["platform", "scope_key"],
                    index_where=_conv.c.status == "open",
                )
            )
            row = (await conn.execute(select(_conv.c.id, _conv.c.profile).where(open_key))).one()
        return int(row.id), row.profile

    async def _add_message(
        self,
        conn: AsyncConnection,
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
    ) -> int:
        result = await conn.execute(
            insert(_msg)
            .values(
                conversation_id=conversation_id,
                role=role,
                author_id=author.id if author else None,
                author_name=author.name if author else None,
                text=text,
                reasoning=reasoning or None,
                model=model,
                token_count=token_count,
                image_count=len(images),
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                latency_ms=latency_ms,
                status=status,
                error=error,
                event_id=event_id,
                created_at=utcnow(),
            )
            .returning(_msg.c.id)
        )
        message_id = int(result.scalar_one())
        for position, image in enumerate(images):
            await conn.execute(
                self._insert(_att)
                .values(sha256=image.sha256, mime=image.mime, size=image.size,
                        width=image.width, height=image.height, data=image.data,
                        created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["sha256"])
            )
            await conn.execute(
                insert(_link).values(message_id=message_id, position=position,
                                     sha256=image.sha256)
            )
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
    ) -> int:
        """Store the assistant's answer (or the failure) and close the inbound event."""
        try:
            async with self._engine.begin() as conn:
                message_id = await self._add_message(
                    conn,
                    conversation_id=start.conversation_id,
                    role="assistant",
                    author=None,
                    text=text,
                    token_count=token_count,
                    event_id=event_id,
                    status=status,
                    error=error,
                    reasoning=reasoning,
                    model=model,
                    usage=usage,
                    latency_ms=latency_ms,
                )
                now = utcnow()
                await conn.execute(
                    update(_conv).where(_conv.c.id == start.conversation_id)
                    .values(updated_at=now)
                )
                await conn.execute(
                    update(_evt)
                    .where(_evt.c.platform == platform, _evt.c.event_id == event_id)
                    .values(status="done" if status != "failed" else "failed", finished_at=now)
                )
                return message_id
        except SQLAlchemyError as err:
            raise StoreError(f"could not store the answer: {type(err).__name__}") from err

    async def load_context(
        self, conversation_id: int, *, budget_tokens: int, max_messages: int, image_turns: int
    ) -> list[StoredMessage]:
        """The newest usable messages that fit ``budget_tokens``, oldest first.

        Images are loaded for the newest ``image_turns`` user messages that have any;
        older messages keep only their ``image_count``.
        """
        query = (
            select(_msg.c.id, _msg.c.role, _msg.c.text, _msg.c.author_name,
                   _msg.c.token_count, _msg.c.image_count)
            .where(_msg.c.conversation_id == conversation_id, _msg.c.status != "failed")
            .order_by(_msg.c.id.desc())
            .limit(max_messages)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
                picked: list[StoredMessage] = []
                used = 0
                for row in rows:
                    if picked and used + row.token_count > budget_tokens:
                        break
                    used += row.token_count
                    picked.append(StoredMessage(row.id, row.role, row.text,
                                                row.author_name or "", row.token_count,
                                                row.image_count))
                with_images = [m.id for m in picked if m.image_count][:image_turns]
                images = await self._images_for(conn, with_images) if with_images else {}
        except SQLAlchemyError as err:
            raise StoreError(f"could not load the conversation: {type(err).__name__}") from err
        picked.reverse()
        return [
            StoredMessage(m.id, m.role, m.text, m.author_name, m.token_count, m.image_count,
                          tuple(images.get(m.id, ())))
            for m in picked
        ]

    async def _images_for(
        self, conn: AsyncConnection, message_ids: list[int]
    ) -> dict[int, list[Image]]:
        rows = await conn.execute(
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
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_conv)
                .where(_conv.c.platform == platform, _conv.c.scope_key == scope,
                       _conv.c.status == "open")
                .values(status="closed", closed_at=utcnow(), updated_at=utcnow())
            )
            return bool(result.rowcount)

    async def count_messages(self, *, platform: str, scope: str) -> int:
        """How many messages the open conversation under this key holds."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(
                select(func.count(_msg.c.id))
                .join(_conv, _conv.c.id == _msg.c.conversation_id)
                .where(_conv.c.platform == platform, _conv.c.scope_key == scope,
                       _conv.c.status == "open")
            )
        return int(value or 0)
