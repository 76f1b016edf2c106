"""The store's tables, prebuilt statements and row types, shared by its modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy import text as sql_text

from core.errors import LeaseLost
from core.limits import LimitHit
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
from core.store.toolcalls import StoredTool
from core.types import Author, Image, Usage, Video

T = TypeVar("T")

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
           _msg.c.image_count, _msg.c.event_id, _msg.c.sort_key, _msg.c.video_count)
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
    video_count: int = 0
    videos: tuple[Video, ...] = ()


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
    ident, role, text, name, tokens, image_count, event_id, sort_key, video_count = row
    return StoredMessage(ident, role, text, name or "", tokens, image_count, event_id or "",
                         sort_key=sort_key or "", video_count=video_count or 0)


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
    videos: tuple[Video, ...] = ()
    # The speech model that transcribed the message's recordings, and what it used.
    model: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class ContextLimits:
    """How much of a conversation to load for the model."""

    budget_tokens: int
    max_messages: int
    image_turns: int
