"""The core's reply events onto Slack: streamed messages, split over Slack's limits.

Answers in threads stream with ``chat.startStream`` / ``appendStream`` / ``stopStream``
(slack-sdk's ``chat_stream``). Where streaming is refused (or there is no thread: the top
level of a direct message), a message is posted and then edited at most once per
``update_interval``. Final answers carry feedback buttons.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import error_kind
from bots.slack.text import Splitter
from bots.slack.translate import ReplyTarget
from core.knowledge.cite import sources_markdown
from core.types import DeltaEvent, DuplicateEvent, ErrorEvent, FinalEvent, ReplyEvent, StatusEvent

__all__ = ["FEEDBACK_ACTION", "SEND_ERRORS", "Rendered", "feedback_blocks", "render_reply"]

log = logging.getLogger(__name__)
FEEDBACK_ACTION = "chatbridge_feedback"
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


class _Writer(Protocol):
    text: str

    async def append(self, text: str) -> None: ...

    async def finish(self, blocks: Sequence[dict[str, Any]] | None) -> str | None: ...


class _StreamRefused(Exception):
    """Streaming failed: what was written so far, the message (if started) and the part
    of the text known to have reached it."""

    def __init__(self, text: str, ts: str | None, shown: str) -> None:
        super().__init__("streaming refused")
        self.text, self.ts, self.shown = text, ts, shown


class _StreamWriter:
    """One message streamed with chat.startStream / appendStream / stopStream."""

    def __init__(self, client: AsyncWebClient, target: ReplyTarget, buffer_size: int) -> None:
        self._client, self._target, self._buffer_size = client, target, buffer_size
        self._stream: AsyncChatStream | None = None
        self.text = ""
        self._shown = ""  # what reached Slack (the rest is in the stream's buffer)

    async def _refused(self, err: Exception, doing: str) -> _StreamRefused:
        """Give up on streaming: stop the started stream (if any), best effort."""
        log.info("%s failed (%s); posting and editing instead", doing, error_kind(err))
        ts = self._stream.ts if self._stream else None
        if ts:
            try:
                await self._client.chat_stopStream(channel=self._target.channel, ts=ts)
            except Exception as stop_err:
                log.info("chat.stopStream after a failure: %s", type(stop_err).__name__)
        return _StreamRefused(self.text, ts, self._shown)

    async def append(self, text: str) -> None:
        self.text += text
        try:
            if self._stream is None:
                assert self._target.thread_ts is not None
                self._stream = await self._client.chat_stream(
                    channel=self._target.channel, thread_ts=self._target.thread_ts,
                    recipient_team_id=self._target.team, recipient_user_id=self._target.user,
                    buffer_size=self._buffer_size,
                )
            if await self._stream.append(markdown_text=text) is not None:
                self._shown = self.text  # the buffer was flushed
        except SEND_ERRORS as err:
            raise await self._refused(err, "streaming") from err

    async def finish(self, blocks: Sequence[dict[str, Any]] | None) -> str | None:
        if self._stream is None:
            if not blocks:
                return None
            await self.append("")
        assert self._stream is not None
        try:
            resp = await self._stream.stop(blocks=list(blocks) if blocks else None)
        except SEND_ERRORS as err:
            raise await self._refused(err, "chat.stopStream") from err
        return str(resp.get("ts") or self._stream.ts or "") or None


class _UpdateWriter:
    """One message posted with chat.postMessage, then edited with chat.update.

    Where an edit is refused (a stopped stream, an old message), the rest of the text goes
    into a new message, edited from then on.
    """

    def __init__(self, client: AsyncWebClient, target: ReplyTarget, interval: float,
                 *, ts: str | None = None, text: str = "", shown: str = "") -> None:
        self._client, self._target, self._interval = client, target, interval
        self.ts, self.text = ts, text
        self._shown = shown  # what the message ``ts`` is known to show
        self._last = 0.0

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

    def _payload(self, blocks: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
        text = self.text.strip() or "…"
        if blocks:
            # markdown_text cannot be combined with blocks: the text goes in a markdown block.
            return {"text": text[:3000],
                    "blocks": [{"type": "markdown", "text": text}, *blocks]}
        return {"markdown_text": text}

    async def finish(self, blocks: Sequence[dict[str, Any]] | None) -> str | None:
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


@dataclass(frozen=True, slots=True)
class Rendered:
    """How a turn ended on Slack: ``ref`` is ``channel/ts`` of the final answer."""

    outcome: str  # "final", "error" or "duplicate"
    ref: str | None = None


class _Renderer:
    def __init__(self, client: AsyncWebClient, target: ReplyTarget, *, limit: int,
                 interval: float, buffer_size: int) -> None:
        self._client, self._target = client, target
        self._interval, self._buffer = interval, buffer_size
        self._streaming = target.thread_ts is not None
        self._splitter = Splitter(limit)
        self._writer: _Writer = self._new_writer()
        self._status_set = False

    def _new_writer(self) -> _Writer:
        if self._streaming:
            return _StreamWriter(self._client, self._target, self._buffer)
        return _UpdateWriter(self._client, self._target, self._interval)

    async def _guarded(self, text: str | None, blocks: Sequence[dict[str, Any]] | None = None,
                       ) -> str | None:
        """Append ``text`` (or finish with ``blocks``), falling back from streaming once."""
        for _ in range(2):
            try:
                if text is not None:
                    await self._writer.append(text)
                    return None
                return await self._writer.finish(blocks)
            except _StreamRefused as refused:
                self._streaming = False
                self._writer = _UpdateWriter(self._client, self._target, self._interval,
                                             ts=refused.ts, text=refused.text,
                                             shown=refused.shown)
                text = "" if text is not None else None
        return None

    async def _apply(self, ops: Sequence[str | None]) -> None:
        for op in ops:
            if op is None:
                await self._guarded(None)
                self._writer = self._new_writer()
            else:
                await self._guarded(op)

    async def status(self, event: StatusEvent) -> None:
        if self._target.assistant and self._target.thread_ts and not self._status_set:
            self._status_set = True
            try:
                await self._client.assistant_threads_setStatus(
                    channel_id=self._target.channel, thread_ts=self._target.thread_ts,
                    status=f"is {event.text}")
            except Exception as err:  # a status is a nicety: never the end of a turn
                log.info("assistant.threads.setStatus failed: %s", error_kind(err))

    async def delta(self, event: DeltaEvent) -> None:
        await self._apply(self._splitter.feed(event.text))

    async def final(self, event: FinalEvent, seen_text: bool) -> str | None:
        ops = self._splitter.feed(event.text) if not seen_text else []
        ops += self._splitter.flush()
        if event.sources:
            ops += self._splitter.feed(f"\n\n{sources_markdown(event.sources)}")
            ops += self._splitter.flush()
        if event.notice:
            ops += self._splitter.feed(f"\n\n_{event.notice}_")
            ops += self._splitter.flush()
        if not seen_text and not event.text.strip() and not event.notice:
            ops += self._splitter.feed("_(The model gave an empty answer.)_")
            ops += self._splitter.flush()
        await self._apply(ops)
        ts = await self._guarded(None, feedback_blocks())
        return f"{self._target.channel}/{ts}" if ts else None

    async def error(self, event: ErrorEvent) -> None:
        ops = self._splitter.flush()
        ops += self._splitter.feed(("\n\n" if self._writer.text else "")
                                   + f":warning: {event.message}")
        ops += self._splitter.flush()
        await self._apply(ops)
        await self._guarded(None)


async def render_reply(
    client: AsyncWebClient, target: ReplyTarget, events: AsyncIterator[ReplyEvent], *,
    limit: int, interval: float = 1.0, buffer_size: int = 256,
    on_start: Callable[[], Awaitable[None]] | None = None,
) -> Rendered:
    """Show one turn's reply events in Slack.

    ``on_start`` runs once, before anything is shown, unless the event is a duplicate.
    """
    renderer = _Renderer(client, target, limit=limit, interval=interval,
                         buffer_size=buffer_size)
    seen_text = False
    async for event in events:
        if isinstance(event, DuplicateEvent):
            return Rendered("duplicate")
        if on_start is not None:
            start, on_start = on_start, None
            await start()
        if isinstance(event, StatusEvent):
            await renderer.status(event)
        elif isinstance(event, DeltaEvent):
            seen_text = True
            await renderer.delta(event)
        elif isinstance(event, FinalEvent):
            return Rendered("final", await renderer.final(event, seen_text))
        elif isinstance(event, ErrorEvent):
            await renderer.error(event)
            return Rendered("error")
    return Rendered("error")
