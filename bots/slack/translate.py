"""Slack events into the adapter's plain values: where a message belongs and who wrote it.

Pure functions over the event payload; no I/O. Identity follows DESIGN.md: a message is
``team/channel/ts`` (so the ``app_mention`` and ``message.channels`` copies of one
message, and Slack's retries, share one event id), a conversation is
``team/channel/thread_ts`` in channel threads and assistant threads, ``team/channel``
for the top level of a direct message — except on the Agent messaging surface
(``agent_view``), where every direct message is a thread root: its answer goes in
``thread_ts or ts`` and each thread is one conversation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["PLATFORM", "Focus", "Incoming", "ReplyTarget", "focus_from_context",
           "incoming_from_event"]

PLATFORM = "slack"
# Message subtypes a person produces; everything else (edits, deletions, joins, bots,
# channel topic changes, assistant thread titles…) is not a new message to answer.
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})

Kind = Literal["channel", "dm", "assistant"]


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where the answer goes."""

    channel: str
    thread_ts: str | None  # None: the top level of a direct message
    team: str
    user: str
    assistant: bool = False


@dataclass(frozen=True, slots=True)
class Incoming:
    """One person's message, as the adapter needs it."""

    kind: Kind
    team: str
    channel: str
    user: str
    ts: str
    text: str  # Slack markup, as sent
    mentioned: bool  # the bot was mentioned (or it is a direct message)
    thread_ts: str | None = None
    user_team: str = ""
    event_type: str = "message"  # "app_mention" or "message"
    bot_user: str = ""  # the bot's own user ID (its mentions are dropped from the text)
    files: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def event_id(self) -> str:
        """The message's identity: the same for every delivery of it."""
        return f"{self.team}/{self.channel}/{self.ts}"

    @property
    def scope(self) -> str:
        """The conversation key."""
        if self.kind == "dm" and self.thread_ts is None:
            return f"{self.team}/{self.channel}"
        return f"{self.team}/{self.channel}/{self.thread_ts or self.ts}"

    @property
    def shared(self) -> bool:
        """Several people may write in this conversation."""
        return self.kind == "channel"

    @property
    def in_thread(self) -> bool:
        """A reply inside an existing thread (not its first message)."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def sort_key(self) -> str:
        """The message's place in Slack's order (its ``ts``), as text that sorts."""
        return sort_key(self.ts)

    def to_payload(self) -> dict[str, Any]:
        """The message as JSON for the inbox (any replica answers from it)."""
        data = asdict(self)
        data["files"] = [dict(f) for f in self.files]
        return data

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Incoming:
        """The message the inbox kept (``to_payload``'s inverse)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["files"] = tuple(fields.get("files") or ())
        return cls(**fields)

    def target(self) -> ReplyTarget:
        """Where the answer to this message goes."""
        thread = None if self.kind == "dm" and self.thread_ts is None \
            else self.thread_ts or self.ts
        return ReplyTarget(self.channel, thread, self.user_team or self.team, self.user,
                           assistant=self.kind == "assistant")


def sort_key(ts: str) -> str:
    """A Slack ``ts`` ("1712345678.000100") as text that sorts in Slack's order."""
    seconds, _, fraction = ts.partition(".")
    try:
        return f"{int(seconds):012d}.{fraction[:6]:0<6}"
    except ValueError:
        return ts


@dataclass(frozen=True, slots=True)
class Focus:
    """What ``app_context_changed`` says the person is looking at (each part may be "")."""

    channel: str = ""
    message_ts: str = ""
    thread_ts: str = ""


def focus_from_context(context: object) -> Focus:
    """The most relevant channel (and message) in an ``app_context_changed`` event's
    ``context``. Entities come ordered by relevance; ``{}`` means nothing in view.
    Entity shapes (protocols-2 K.1): ``slack#/types/channel_id`` with ``value``,
    ``slack#/types/message_context`` with ``value`` (or the entity itself) holding
    ``channel_id`` and ``message_ts``, ``slack#/types/thread_ts``; canvases and lists are
    not read."""
    entities = context.get("entities") if isinstance(context, Mapping) else None
    channel = message_ts = thread_ts = ""
    for entity in entities if isinstance(entities, list) else ():
        if not isinstance(entity, Mapping):
            continue
        kind, value = _str(entity.get("type")), entity.get("value")
        if kind.endswith("/channel_id") and not channel:
            channel = _str(value)
        elif kind.endswith("/message_context") and not message_ts:
            inner = value if isinstance(value, Mapping) else entity
            channel = channel or _str(inner.get("channel_id"))
            message_ts = _str(inner.get("message_ts"))
        elif kind.endswith("/thread_ts") and not thread_ts:
            thread_ts = _str(value)
    return Focus(channel, message_ts, thread_ts)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def incoming_from_event(
    body: Mapping[str, Any], *, bot_user_id: str, bot_id: str, allow_bots: bool,
    assistant: bool = False, agent: bool = False,
) -> Incoming | None:
    """The person's message in an ``app_mention`` or ``message`` event, or ``None``.

    ``None`` for everything not to be answered: our own messages, other bots (unless
    allowed), edits and other non-user subtypes, events missing what a message needs.
    ``agent``: the app uses the Agent messaging surface (every DM message a thread root).
    """
    event = body.get("event")
    if not isinstance(event, Mapping):
        return None
    kind_of_event = event.get("type")
    if kind_of_event not in ("app_mention", "message"):
        return None
    if event.get("subtype") not in USER_SUBTYPES and event.get("subtype") != "bot_message":
        return None
    sender_bot = _str(event.get("bot_id"))
    user = _str(event.get("user"))
    if user == bot_user_id or (sender_bot and sender_bot == bot_id):
        return None
    if (sender_bot or event.get("subtype") == "bot_message") and not allow_bots:
        return None
    user = user or sender_bot
    channel, ts = _str(event.get("channel")), _str(event.get("ts"))
    team = _str(body.get("team_id")) or _str(event.get("team"))
    if not (user and channel and ts and team):
        return None
    text = _str(event.get("text"))
    thread_ts = _str(event.get("thread_ts")) or None
    channel_type = _str(event.get("channel_type"))
    files = tuple(f for f in event.get("files") or () if isinstance(f, Mapping))
    if kind_of_event == "message" and channel_type == "im":
        kind: Kind = "assistant" if assistant or agent or thread_ts else "dm"
        mentioned = True
    elif channel_type in ("", "channel", "group") and not channel.startswith("D"):
        kind = "channel"
        mentioned = kind_of_event == "app_mention" or f"<@{bot_user_id}" in text
    else:
        return None  # group DMs and anything newer: not subscribed, not answered
    return Incoming(
        kind=kind, team=team, channel=channel, user=user, ts=ts, text=text,
        mentioned=mentioned, thread_ts=thread_ts,
        user_team=_str(event.get("user_team")) or _str(event.get("team")),
        event_type=str(kind_of_event), bot_user=bot_user_id, files=files,
    )
