"""SQLAlchemy tables: conversations, messages, attachments, inbound events.

Migrations in ``migrations/versions`` create exactly these; a test checks for drift.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT on PostgreSQL, INTEGER on SQLite (only INTEGER PRIMARY KEY autoincrements there).
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# An inbound event still to be answered. Written out, not bound: a partial index is used
# only when a query's WHERE visibly implies the index's (SQLite and PostgreSQL alike).
WAITING_SQL = "status IN ('received', 'processing') AND scope_key IS NOT NULL"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base holding chatbridge's metadata."""

    metadata = MetaData(naming_convention=NAMING)


class Conversation(Base):
    """A conversation under a platform scope key; a reset closes it and opens the next."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    scope_key: Mapped[str] = mapped_column(String(512))
    profile: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_conversations_platform_scope_key", "platform", "scope_key"),
        # At most one open conversation per key.
        Index(
            "uq_conversations_open_key",
            "platform",
            "scope_key",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )


class Message(Base):
    """One message; append-only."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str | None] = mapped_column(String(128))
    author_name: Mapped[str | None] = mapped_column(String(256))
    text: Mapped[str] = mapped_column(Text, default="")
    reasoning: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    video_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # True when the tokens above are chatbridge's estimate (the server reported none).
    usage_estimated: Mapped[bool | None] = mapped_column(Boolean)
    # Of prompt_tokens: read from the provider's context cache / written into it.
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    cache_creation_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(256))
    # Where the platform shows this message (e.g. Slack "C123/1712345678.000100").
    platform_ref: Mapped[str | None] = mapped_column(String(256))
    # The platform's order of the user message (Slack ts, Telegram date/message id).
    sort_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_platform_ref", "platform_ref"),
        Index("ix_messages_event_id", "event_id"),  # an answer found by its event
        Index("ix_messages_author_id", "author_id"),  # forget --user
        Index("ix_messages_created_at", "created_at"),  # prune, retention
    )


class ConversationMemory(Base):
    """A conversation's rolling summary and who is writing the next one.

    ``covers_message_id``: the newest message the summary covers; the context is the
    summary plus messages after it. ``lease_owner``/``lease_until``: the one summariser at
    work (across replicas). ``epoch`` rises when prune/forget delete messages, so cached
    context windows of the conversation are dropped.
    """

    __tablename__ = "conversation_memory"

    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    summary_tokens: Mapped[int] = mapped_column(Integer, default=0)
    covers_message_id: Mapped[int] = mapped_column(BigId, default=0)
    model: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed in a row
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class Attachment(Base):
    """Image bytes, stored once, keyed by the SHA-256 of the bytes."""

    __tablename__ = "attachments"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MessageAttachment(Base):
    """Links a message to its attachments, in order; a video's sampled frames carry its
    number within the message (``video``, from 1) and their rate (``fps``)."""

    __tablename__ = "message_attachments"

    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("attachments.sha256"))
    video: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)


class InboundEvent(Base):
    """Every inbound event once: the unique key makes redeliveries visible."""

    __tablename__ = "inbound_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="received")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set for events queued in the inbox (claimed per conversation key); NULL for events
    # answered where they arrived (the console) and for side events (greetings…).
    scope_key: Mapped[str | None] = mapped_column(String(512))
    payload: Mapped[str | None] = mapped_column(Text)  # the adapter's JSON, to answer from
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    message_id: Mapped[int | None] = mapped_column(BigId)  # the user message, once stored
    # The platform's order (set by the adapter): a batch is answered in this order.
    sort_key: Mapped[str | None] = mapped_column(String(64))
    # JSON list of the platform ids of the reply messages a turn showed for this event,
    # recorded as soon as they exist: a retaken turn edits them instead of posting anew.
    shown: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("platform", "event_id"),
        Index("ix_inbound_events_status", "status"),
        Index("ix_inbound_events_platform_scope_key_status", "platform", "scope_key", "status"),
        # Only the events still waiting: the inbox's claim reads this, never the
        # (ever-growing) answered ones. Literal values: see WAITING_SQL.
        Index("ix_inbound_events_waiting", "platform", "scope_key", "id",
              sqlite_where=text(WAITING_SQL), postgresql_where=text(WAITING_SQL)),
    )


class InboxLease(Base):
    """Who is answering a conversation key's queued events, and until when.

    One row per key that ever had a queued event; a worker takes the key (and every
    event waiting under it) while ``expires_at`` is past, and renews it while it works.
    """

    __tablename__ = "inbox_leases"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxItem(Base):
    """A reply the platform did not take after its retries, kept to be sent again."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(256))
    target: Mapped[str] = mapped_column(Text)  # the adapter's JSON: where the reply goes
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_outbox_status", "status"),)


class Feedback(Base):
    """A person's rating of an answer (thumbs up/down); one per person and message."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("message_id", "user_id"),)


class ScopeSetting(Base):
    """Choices that outlive a reset, per conversation key (e.g. the model picked)."""

    __tablename__ = "scope_settings"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    model: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageCounter(Base):
    """Turns and tokens of one subject (``user:<id>``, ``conversation:<key>``) in one window."""

    __tablename__ = "usage_counters"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(600), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class ToolCallRow(Base):
    """One tool call of a turn and its result; linked to the turn's (last) user message.

    ``output`` is NULL while the call runs; a retaken turn finds the finished ones here
    and does not run them again.
    """

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    arguments: Mapped[str] = mapped_column(Text)
    # What the model wrote before asking for the round's calls (on the round's first row).
    preamble: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # running, ok, error, timeout
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("message_id", "round", "position"),
        Index("ix_tool_calls_conversation_id_message_id", "conversation_id", "message_id"),
    )


class DocumentRow(Base):
    """A posted document's extracted text, stored once, keyed by the SHA-256 of the file."""

    __tablename__ = "documents"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # pdf, docx, pptx, xlsx, text, html, csv
    size: Mapped[int] = mapped_column(Integer)  # bytes of the file
    pages: Mapped[int] = mapped_column(Integer, default=0)  # PDF pages, slides, sheets
    text: Mapped[str] = mapped_column(Text)  # empty for a scanned PDF (no text layer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Handoff(Base):
    """A conversation handed to people: where staff answer it, and whether it is open.

    At most one open handoff per conversation key; every replica reads it here.
    """

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))
    scope_key: Mapped[str] = mapped_column(String(512))
    conversation_id: Mapped[int | None] = mapped_column(BigId)
    profile: Mapped[str | None] = mapped_column(String(64))
    # The customer's place, as the adapter needs it to post there (JSON).
    customer: Mapped[str | None] = mapped_column(Text)
    staff: Mapped[str] = mapped_column(String(256))  # "slack:C0STAFF", "telegram:-100…"
    # The staff notice ("C0STAFF/1712345678.000100", "-1001234/42"); replies to it are relayed.
    notice_ref: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open, released
    reason: Mapped[str] = mapped_column(Text, default="")
    # What opened it: phrase, tool, failures, hours.
    trigger: Mapped[str] = mapped_column(String(16), default="tool")
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("uq_handoffs_open_key", "platform", "scope_key", unique=True,
              sqlite_where=text("status = 'open'"), postgresql_where=text("status = 'open'")),
        Index("ix_handoffs_notice_ref", "notice_ref"),
        Index("ix_handoffs_status", "status"),
    )


class BusinessConnection(Base):
    """A Telegram Business connection as last reported: on, and allowed to reply."""

    __tablename__ = "business_connections"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))  # the business owner
    enabled: Mapped[bool] = mapped_column(Boolean)
    can_reply: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChatPause(Base):
    """The bot keeps quiet in a conversation until ``until`` (the owner wrote by hand)."""

    __tablename__ = "chat_pauses"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlatformState(Base):
    """A small value an adapter keeps for every replica (what a Slack user looks at, the
    app's DM surface), from the event with the newest ``stamp`` (``core.platform_state``)."""

    __tablename__ = "platform_state"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # a JSON object
    stamp: Mapped[str] = mapped_column(String(32))  # the event's place in event order
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Relay(Base):
    """A message relayed between a customer and staff: claimed with a lease, then sent.

    One row per platform and key; a row left ``sending`` with its lease over belongs to a
    sender that died before the platform answered, and is sent again (``core.relays``).
    """

    __tablename__ = "relays"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(32))  # where it is posted
    key: Mapped[str] = mapped_column(String(256))  # the carrying event + what it is
    target: Mapped[str] = mapped_column(Text)  # the platform's reply target (JSON)
    text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="text")  # text, notice
    handoff_id: Mapped[int | None] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16), default="sending")  # sending, sent, outbox
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Where it was posted ("C0STAFF/1712345678.000200", "-1001234/57"): a staff reply to
    # a relayed customer message is matched to its handoff by it.
    ref: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("platform", "key"),
        Index("ix_relays_status_lease_until", "status", "lease_until"),
        Index("ix_relays_ref", "ref"),
    )
