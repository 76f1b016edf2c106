"""How one Slack message of a reply is written: streamed (``chat.startStream`` and
its appends) or posted and then edited; the blocks and limits they share (``core`` events
are turned into these calls by ``bots.slack.render``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bots.posters import HANDOFF_START
from bots.slack.errors import error_kind
from bots.slack.translate import ReplyTarget
from core.types import (
    ToolActivity,
)

__all__ = ["CONTINUED", "FEEDBACK_ACTION", "INTERRUPTED", "SEND_ERRORS", "StreamLimits",
           "StreamRefused", "StreamWriter", "UpdateWriter", "Writer", "feedback_blocks",
           "person_blocks", "short", "task_chunk"]

log = logging.getLogger(__name__)
FEEDBACK_ACTION = "chatbridge_feedback"
INTERRUPTED = "_…interrupted; the answer continues shortly._"
CONTINUED = "\n\n_…continued below_"  # the end of a streamed message that rolled over
# Slack's refusals of a streamed message that has run its course: go on in a new one.
STREAM_ENDED = frozenset({"message_not_in_streaming_state", "msg_too_long"})
THINKING_ID = "thinking"
THINKING_SHOWN = 2_800  # characters of thinking shown (a context block takes 3,000)
PLAN_TITLE = "Working on it"
STREAM_MAX_SECONDS = 240.0  # Slack ends a streamed message after about 5 minutes
STREAM_MAX_CHARS = 10_000  # ... and refuses one past about 12,000 characters
INTERRUPT_SECONDS = 3.0  # at most this long to show the notice when cancelled
# What the status line cycles through while the model works (setStatus loading_messages).
LOADING = ("Thinking…", "Reading the conversation…", "Writing an answer…")
# What a failed Web API call raises: Slack's refusal, or the connection's failure.
SEND_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError)


def feedback_blocks() -> list[dict[str, Any]]:
    """A thumbs up / thumbs down element for a final answer."""
    return [{
        "type": "context_actions",
        "elements": [{
            "type": "feedback_buttons",
            "action_id": FEEDBACK_ACTION,
            "positive_button": {"text": {"type": "plain_text", "text": "Good answer"},
                                "value": "positive",
                                "accessibility_label": "Mark this answer as helpful"},
            "negative_button": {"text": {"type": "plain_text", "text": "Bad answer"},
                                "value": "negative",
                                "accessibility_label": "Mark this answer as unhelpful"},
        }],
    }]


def person_blocks(scope: str) -> list[dict[str, Any]]:
    """A "Talk to a person" button under "I don't know" (its value: the conversation)."""
    return [{"type": "actions", "elements": [{
        "type": "button", "action_id": HANDOFF_START, "value": scope[:2000],
        "text": {"type": "plain_text", "text": "Talk to a person"}}]}]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """When a streamed message is ended and the answer goes on in a new one."""

    max_seconds: float = STREAM_MAX_SECONDS
    max_chars: int = STREAM_MAX_CHARS


def short(text: str, limit: int = THINKING_SHOWN) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class Writer(Protocol):
    text: str

    @property
    def ts(self) -> str | None: ...

    async def append(self, text: str) -> None: ...

    async def tool(self, activity: ToolActivity) -> None: ...

    async def finish(self, blocks: Sequence[dict[str, Any]] | None,
                     footer: str = "") -> str | None: ...

    async def interrupt(self, notice: str) -> None: ...

    async def task(self, chunk: dict[str, Any]) -> None: ...

    def expired(self) -> bool: ...


class StreamRefused(Exception):
    """Streaming failed: what was written so far, the message (if started) and the part
    of the text known to have reached it."""

    def __init__(self, text: str, ts: str | None, shown: str, kind: str = "") -> None:
        super().__init__("streaming refused")
        self.text, self.ts, self.shown, self.kind = text, ts, shown, kind


class StreamWriter:
    """One message streamed with chat.startStream / appendStream / stopStream."""

    def __init__(self, client: AsyncWebClient, target: ReplyTarget, buffer_size: int,
                 *, max_seconds: float = STREAM_MAX_SECONDS,
                 replay: Sequence[dict[str, Any]] = ()) -> None:
        self._client, self._target, self._buffer_size = client, target, buffer_size
        self._stream: AsyncChatStream | None = None
        self.text = ""
        self._shown = ""  # what reached Slack (the rest is in the stream's buffer)
        self._max_seconds = max_seconds
        self._began = 0.0
        self._replay = list(replay)  # tasks still running when the last message rolled over
        self._planned = False

    def expired(self) -> bool:
        """Whether this message has streamed for as long as one may (roll over now)."""
        left = self.time_left()
        return left is not None and left <= 0

    def time_left(self) -> float | None:
        """Seconds until this message should roll over (``None``: not started)."""
        if self._stream is None:
            return None
        return self._max_seconds - (time.monotonic() - self._began)

    @property
    def ts(self) -> str | None:
        """The streamed message, once Slack started it."""
        return self._stream.ts if self._stream else None

    async def _refused(self, err: Exception, doing: str) -> StreamRefused:
        """Give up on streaming: stop the started stream (if any), best effort."""
        kind = error_kind(err)
        if kind in STREAM_ENDED:
            log.info("%s: %s; going on in a new streamed message", doing, kind)
        else:
            log.info("%s failed (%s); posting and editing instead", doing, kind)
        ts = self._stream.ts if self._stream else None
        if ts:
            try:
                await self._client.chat_stopStream(channel=self._target.channel, ts=ts)
            except Exception as stop_err:
                log.info("chat.stopStream after a failure: %s", type(stop_err).__name__)
        return StreamRefused(self.text, ts, self._shown, kind)

    async def _started(self) -> AsyncChatStream:
        if self._stream is None:
            assert self._target.thread_ts is not None
            self._stream = await self._client.chat_stream(
                channel=self._target.channel, thread_ts=self._target.thread_ts,
                recipient_team_id=self._target.team, recipient_user_id=self._target.user,
                buffer_size=self._buffer_size, task_display_mode="plan",
            )
            self._began = time.monotonic()
            if self._replay:
                replay, self._replay = self._replay, []
                await self.task(replay[0], *replay[1:])
        return self._stream

    async def append(self, text: str) -> None:
        self.text += text
        try:
            if await (await self._started()).append(markdown_text=text) is not None:
                self._shown = self.text  # the buffer was flushed
        except SEND_ERRORS as err:
            raise await self._refused(err, "streaming") from err

    async def tool(self, activity: ToolActivity) -> None:
        """A ``task_update`` chunk: the tool's title and state, with its source when done."""
        await self.task(task_chunk(activity))

    async def task(self, chunk: dict[str, Any], *more: dict[str, Any]) -> None:
        """Task chunks, under the message's plan (its first task opens it)."""
        chunks = [chunk, *more]
        try:
            stream = await self._started()
            if not self._planned:
                self._planned = True
                chunks.insert(0, {"type": "plan_update", "title": PLAN_TITLE})
            await stream.append(chunks=chunks)
            self._shown = self.text  # chunks flush the buffer with them
        except SEND_ERRORS as err:
            raise await self._refused(err, "streaming a task update") from err

    async def finish(self, blocks: Sequence[dict[str, Any]] | None,
                     footer: str = "") -> str | None:
        if self._stream is None:
            if not blocks:
                return None
            await self.append("")
        assert self._stream is not None
        try:
            resp = await self._stream.stop(markdown_text=footer or None,
                                           blocks=list(blocks) if blocks else None)
        except SEND_ERRORS as err:
            raise await self._refused(err, "chat.stopStream") from err
        return str(resp.get("ts") or self._stream.ts or "") or None

    async def interrupt(self, notice: str) -> None:
        """Stop the stream (what is buffered goes out first) with ``notice`` at the end."""
        if self._stream is not None and self._stream.ts:
            await self._stream.stop(markdown_text=notice or None)


class UpdateWriter:
    """One message posted with chat.postMessage, then edited with chat.update.

    Where an edit is refused (a stopped stream, an old message), the rest of the text goes
    into a new message, edited from then on.
    """

    def __init__(self, client: AsyncWebClient, target: ReplyTarget, interval: float,
                 *, ts: str | None = None, text: str = "", shown: str = "") -> None:
        self._client, self._target, self._interval = client, target, interval
        self.ts: str | None = ts
        self.text = text
        self._shown = shown  # what the message ``ts`` is known to show
        self._last = 0.0
        self.context = ""  # the model's thinking, shown above the final answer

    def expired(self) -> bool:
        """Posted messages do not expire."""
        return False

    async def task(self, chunk: dict[str, Any]) -> None:
        """Tasks other than tools' are shown in streamed messages only."""

    async def _edit(self, **payload: Any) -> bool:
        """Edit the message; on refusal, go on in a new message with the rest."""
        assert self.ts is not None
        try:
            await self._client.chat_update(channel=self._target.channel, ts=self.ts,
                                           **payload)
            return True
        except SlackApiError as err:
            log.info("chat.update refused (%s); posting the rest as a new message",
                     error_kind(err))
        if self.text.startswith(self._shown):
            self.text = self.text[len(self._shown):]
        self.ts, self._shown = None, ""
        return False

    async def append(self, text: str) -> None:
        self.text += text
        if not self.text.strip():
            return
        if self.ts is not None and time.monotonic() - self._last >= self._interval \
                and self._shown != self.text:
            if await self._edit(markdown_text=self.text):
                self._shown, self._last = self.text, time.monotonic()
            elif not self.text.strip():
                return
        if self.ts is None:
            resp = await self._client.chat_postMessage(
                channel=self._target.channel, thread_ts=self._target.thread_ts,
                markdown_text=self.text,
            )
            self.ts, self._shown, self._last = str(resp["ts"]), self.text, time.monotonic()

    async def tool(self, activity: ToolActivity) -> None:
        """Until the answer starts, the message shows what the tool is doing."""
        if self.text.strip() or activity.status != "in_progress":
            return
        line = f"_{activity.title}_"
        if self.ts is None:
            resp = await self._client.chat_postMessage(
                channel=self._target.channel, thread_ts=self._target.thread_ts,
                markdown_text=line)
            self.ts, self._shown = str(resp["ts"]), line
        elif await self._edit(markdown_text=line):
            self._shown = line
        self._last = time.monotonic()

    def _payload(self, blocks: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
        text = self.text.strip() or "…"
        if blocks:
            # markdown_text cannot be combined with blocks: the text goes in a markdown block.
            above = [{"type": "context", "elements": [
                {"type": "mrkdwn", "text": "_Thinking:_ " + short(self.context)}]}] \
                if self.context.strip() else []
            return {"text": text[:3000],
                    "blocks": [*above, {"type": "markdown", "text": text}, *blocks]}
        return {"markdown_text": text}

    async def interrupt(self, notice: str) -> None:
        """Show the text so far with ``notice`` at the end."""
        if self.ts is not None:
            await self._client.chat_update(channel=self._target.channel, ts=self.ts,
                                           markdown_text=self.text.strip() + notice)

    async def finish(self, blocks: Sequence[dict[str, Any]] | None,
                     footer: str = "") -> str | None:
        if self.ts is not None and (blocks or self._shown != self.text):
            shown_ts = self.ts
            if await self._edit(**self._payload(blocks)):
                return self.ts
            if not self.text.strip():
                return shown_ts  # everything is shown already; only the buttons are lost
        if self.ts is None:
            resp = await self._client.chat_postMessage(
                channel=self._target.channel, thread_ts=self._target.thread_ts,
                **self._payload(blocks))
            self.ts = str(resp["ts"])
        return self.ts


def task_chunk(activity: ToolActivity) -> dict[str, Any]:
    """A tool call as a ``task_update`` chunk, with its source when it read one."""
    chunk: dict[str, Any] = {"type": "task_update", "id": activity.call_id[:64],
                             "title": activity.title, "status": activity.status}
    if activity.url:
        chunk["sources"] = [{"type": "url", "url": activity.url,
                             "text": urlsplit(activity.url).hostname or activity.url}]
    return chunk
