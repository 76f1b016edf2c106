"""Reading the channel (or thread) a person looks at: for the model's ``read_channel``
tool, and read into the message for profiles without tools.

Slack lets a bot read only conversations it is a member of; elsewhere the model is told it
cannot (and says so) and nothing is read. Only messages people (or allowed bots) wrote
are kept, the newest that fit the budget, oldest first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import error_kind
from bots.slack.render import SEND_ERRORS
from bots.slack.translate import Focus
from core.tools import Tool, ToolContext, ToolOutput
from core.tools.registry import ToolError

__all__ = ["CHANNEL_TASK", "TOOL_NAME", "ChannelRead", "channel_tool", "read_channel"]

log = logging.getLogger(__name__)
CHANNEL_TASK = "Reading the channel…"
TOOL_NAME = "read_channel"
HISTORY_LIMIT = 100  # messages asked for; the newest that fit the budget are kept
_NOT_MEMBER = ("not_in_channel", "channel_not_found", "missing_scope")


@dataclass(frozen=True, slots=True)
class ChannelRead:
    """What reading the focused channel gave: text for the model, or why not."""

    text: str
    ok: bool


async def read_channel(client: AsyncWebClient, focus: Focus, *, max_chars: int,
                       name_of: Callable[[str], str | None] | None = None) -> ChannelRead:
    """The focused thread's replies (``conversations.replies``) or the channel's recent
    messages (``conversations.history``, up to the focused message), oldest first, the
    newest that fit ``max_chars``."""
    where = f"<#{focus.channel}>"
    thread = focus.thread_ts
    try:
        if thread:
            resp = await client.conversations_replies(channel=focus.channel, ts=thread,
                                                      limit=HISTORY_LIMIT)
        else:
            resp = await client.conversations_history(
                channel=focus.channel, limit=HISTORY_LIMIT, latest=focus.message_ts or None,
                inclusive=True if focus.message_ts else None)
    except SEND_ERRORS as err:
        kind = error_kind(err)
        log.info("reading %s: %s", focus.channel, kind)
        why = ("the assistant is not a member of it (invite it to read it)"
               if kind in _NOT_MEMBER else "reading it failed")
        return ChannelRead(f"[The person is looking at channel {where}; its messages could "
                           f"not be read: {why}.]", False)
    messages = list(resp.get("messages") or [])
    if thread:
        messages.reverse()  # replies come oldest first; keep the newest that fit
    lines: list[str] = []
    used = 0
    for msg in messages:  # newest first
        text = str(msg.get("text") or "").strip()
        if not text or msg.get("subtype") not in (None, "thread_broadcast", "bot_message"):
            continue
        who = str(msg.get("user") or msg.get("bot_id") or "?")
        if name_of is not None:
            who = name_of(who) or who
        line = f"{who}: {text}"
        if used + len(line) + 1 > max_chars:
            break
        lines.append(line)
        used += len(line) + 1
    lines.reverse()
    if thread:
        head = f"[Messages of the thread {thread} in channel {where}, oldest first"
    else:
        head = f"[Recent messages in channel {where}, oldest first"
        head += f", up to the message {focus.message_ts} the person is looking at" \
            if focus.message_ts else ""
    return ChannelRead(head + ":]\n" + "\n".join(lines) + "\n[End of the channel's messages.]",
                       True)


def channel_tool(client: AsyncWebClient, focus: Focus, *, max_chars: int,
                 name_of: Callable[[str], str | None] | None = None) -> Tool:
    """The ``read_channel`` tool of one turn: the person's focus is fixed in it, so the
    model only decides whether the question needs it."""
    what = f"thread {focus.thread_ts} in channel <#{focus.channel}>" if focus.thread_ts \
        else f"channel <#{focus.channel}>"

    async def run(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        read = await read_channel(client, focus, max_chars=max_chars, name_of=name_of)
        if not read.ok:
            raise ToolError(read.text)  # shown as a failed task; the model says why
        return ToolOutput(read.text)

    return Tool(
        name=TOOL_NAME,
        description=(f"Read the recent messages of the Slack {what}, which the person is "
                     "looking at right now. Call it when they ask about what they are "
                     "looking at: 'this channel', 'this thread', 'here', 'summarise this', "
                     "'what did I miss'. Takes no arguments."),
        run=run, source="slack", label=lambda _arguments: CHANNEL_TASK,
    )
