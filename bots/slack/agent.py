"""Slack's Agent messaging surface: which DM surface is used, what a person looks at."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.config import Surface
from bots.slack.errors import error_kind
from bots.slack.render import SEND_ERRORS
from bots.slack.translate import Focus

__all__ = ["CHANNEL_TASK", "ChannelRead", "Focuses", "SurfaceState", "asks_about_focus",
           "read_channel"]

log = logging.getLogger(__name__)
CHANNEL_TASK = "Reading the channel…"
HISTORY_LIMIT = 100  # messages asked for; the newest that fit the budget are kept
# "summarise this channel", "what is this thread about", "the message above", "here"…
_ABOUT_FOCUS = re.compile(
    r"\b(this|that|the|current)\s+(channel|conversation|thread|discussion|message|post)\b"
    r"|\bhere\b|\bin\s+#?[a-z0-9_-]+\s+channel\b", re.IGNORECASE)


class SurfaceState:
    """Whether direct messages arrive on the Agent messaging surface (each one a thread
    root) or the older assistant container. ``auto`` follows the events that arrive:
    ``app_home_opened`` (Messages tab) and ``app_context_changed`` come only with
    ``agent_view``; ``assistant_thread_started`` only with ``assistant_view``."""

    def __init__(self, setting: Surface) -> None:
        self.setting = setting
        self._seen_agent: bool | None = None

    @property
    def agent(self) -> bool:
        """Whether each DM message is a thread root."""
        return self.setting == "agent" or (self.setting == "auto" and bool(self._seen_agent))

    def saw(self, *, agent: bool) -> None:
        """An event only one of the surfaces sends arrived."""
        if self.setting == "auto" and self._seen_agent is not agent:
            log.info("Slack DM surface detected: %s", "agent" if agent else "assistant")
            self._seen_agent = agent


class Focuses:
    """The latest ``app_context_changed`` per person (and per thread, when the event names
    one), newest kept; held in this process only."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, Focus] = OrderedDict()

    def note(self, team: str, user: str, focus: Focus) -> None:
        """Keep what ``user`` looks at now (``{}`` context: nothing); an event without
        its user applies to the whole workspace's DMs until a person's own arrives."""
        user = user or "*"
        for key in {f"{team}/{user}", f"{team}/{user}/{focus.thread_ts}"}:
            self._items[key] = focus
            self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def get(self, team: str, user: str, thread_ts: str | None) -> Focus:
        """What the person looked at when writing in ``thread_ts``."""
        return self._items.get(f"{team}/{user}/{thread_ts or ''}") \
            or self._items.get(f"{team}/{user}") or self._items.get(f"{team}/*") or Focus()


def asks_about_focus(text: str) -> bool:
    """Whether a message is about what the person is looking at ("summarise this
    channel"): only then is the channel read."""
    return bool(_ABOUT_FOCUS.search(text))


@dataclass(frozen=True, slots=True)
class ChannelRead:
    """What reading the focused channel gave: text for the model, or why not."""

    text: str
    ok: bool


async def read_channel(client: AsyncWebClient, focus: Focus, *, max_chars: int,
                       name_of: Any = None) -> ChannelRead:
    """The channel's recent messages (``conversations.history``), oldest first, the newest
    that fit ``max_chars``. Slack lets a bot read only channels it is a member of:
    elsewhere the model is told it cannot (and says so), nothing is read."""
    where = f"<#{focus.channel}>"
    try:
        resp = await client.conversations_history(
            channel=focus.channel, limit=HISTORY_LIMIT, latest=focus.message_ts or None,
            inclusive=True if focus.message_ts else None)
    except SEND_ERRORS as err:
        kind = error_kind(err)
        log.info("conversations.history of %s: %s", focus.channel, kind)
        if kind in ("not_in_channel", "channel_not_found", "missing_scope"):
            why = "the assistant is not a member of it (invite it to read it)"
        else:
            why = "reading it failed"
        return ChannelRead(f"[The person is looking at channel {where}; its messages could "
                           f"not be read: {why}.]", False)
    lines: list[str] = []
    used = 0
    for msg in resp.get("messages") or []:  # newest first
        text = str(msg.get("text") or "").strip()
        if not text or msg.get("subtype") not in (None, "thread_broadcast", "bot_message"):
            continue
        who = str(msg.get("user") or msg.get("bot_id") or "?")
        if callable(name_of):
            who = name_of(who) or who
        line = f"{who}: {text}"
        if used + len(line) + 1 > max_chars:
            break
        lines.append(line)
        used += len(line) + 1
    lines.reverse()
    head = f"[Recent messages in channel {where}, oldest first"
    head += f", up to the message {focus.message_ts} the person is looking at" \
        if focus.message_ts else ""
    return ChannelRead(head + ":]\n" + "\n".join(lines) + "\n[End of the channel's messages.]",
                       True)
