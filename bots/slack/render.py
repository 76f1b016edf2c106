"""The core's reply events onto Slack: streamed messages, split over Slack's limits.

Answers in threads stream with ``chat.startStream`` / ``appendStream`` / ``stopStream``
(slack-sdk's ``chat_stream``). Where streaming is refused (or there is no thread: the top
level of a direct message), a message is posted and then edited at most once per
``update_interval``. Final answers carry feedback buttons.

A streamed message rolls over before Slack's limits on one streamed message (it expires
after about five minutes, ``message_not_in_streaming_state``, and refuses text past a
total length, ``msg_too_long``; ``StreamLimits``): it is stopped with a short "continued
below" and the answer goes on in a new streamed message in the same thread, tasks still
running replayed there. Tool calls show as ``task_update`` chunks under a ``plan_update``
(``task_display_mode="plan"``); the model's thinking (``ThinkingEvent``, only for a
profile with ``show_thinking``) as a collapsed "Thinking" task whose details hold it, or
a context block above a posted answer — never in the answer's text.

Each message of the reply is reported (``on_shown``) as soon as Slack gives it a ``ts``,
so that a retaken turn (another replica, after a crash or shutdown) edits what the
interrupted attempt showed (``reuse``) instead of answering a second time beside it (in
a thread, an answer longer than those messages streams the rest in new ones). A
turn cancelled mid-answer (shutdown, a lost lease) ends its message with a short notice
and stops its stream, so nothing stays "streaming".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.errors import error_kind
from bots.slack.text import Splitter
from bots.slack.translate import ReplyTarget
from bots.slack.writers import (
    CONTINUED,
    FEEDBACK_ACTION,
    INTERRUPT_SECONDS,
    INTERRUPTED,
    LOADING,
    SEND_ERRORS,
    STREAM_ENDED,
    THINKING_ID,
    StreamLimits,
    StreamRefused,
    StreamWriter,
    UpdateWriter,
    Writer,
    feedback_blocks,
    person_blocks,
    short,
    task_chunk,
)
from core.inbox import LEASE_LOST
from core.knowledge.cite import sources_markdown
from core.types import (
    DeltaEvent,
    DuplicateEvent,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
    ThinkingEvent,
    ToolActivity,
)

__all__ = ["CONTINUED", "FEEDBACK_ACTION", "LOADING", "SEND_ERRORS", "Rendered", "StreamLimits",
           "feedback_blocks", "render_reply"]

log = logging.getLogger(__name__)
DEFAULT_LIMITS = StreamLimits()  # Slack's limits on one streamed message, as far as known


@dataclass(frozen=True, slots=True)
class Rendered:
    """How a turn ended on Slack: ``ref`` is ``channel/ts`` of the final answer."""

    outcome: str  # "final", "error" or "duplicate"
    ref: str | None = None


class _Renderer:
    def __init__(self, client: AsyncWebClient, target: ReplyTarget, *, limit: int,
                 interval: float, buffer_size: int, reuse: Sequence[str] = (),
                 on_shown: Callable[[list[str]], Awaitable[None]] | None = None,
                 limits: StreamLimits = DEFAULT_LIMITS) -> None:
        self._client, self._target = client, target
        self._interval, self._buffer = interval, buffer_size
        # A retake edits the interrupted attempt's messages; what goes beyond them streams
        # on (in a thread, where that attempt streamed too) in new messages.
        self._reuse = list(reuse)
        self._streaming = target.thread_ts is not None
        self._limits = limits
        if self._streaming:  # room for the "continued below" at the end of each message
            limit = min(limit, limits.max_chars) - len(CONTINUED)
        self._splitter = Splitter(limit)
        self._on_shown = on_shown
        self.shown: list[str] = []  # ts of the messages this reply occupies
        self._tasks: dict[str, dict[str, Any]] = {}  # task chunks still running, by id
        self._thinking = ""  # the model's reasoning so far (show_thinking)
        self._thinking_open = False
        self._writer: Writer = self._new_writer()
        self._status_set = False
        # One change at a time: the events' and the idle roll-over's (``watch_expiry``).
        self.lock = asyncio.Lock()

    def _new_writer(self) -> Writer:
        if self._reuse:
            # "\x00": a text the old message surely does not show, so the first pass edits.
            return UpdateWriter(self._client, self._target, self._interval,
                                 ts=self._reuse.pop(0), shown="\x00")
        if self._streaming:
            return StreamWriter(self._client, self._target, self._buffer,
                                 max_seconds=self._limits.max_seconds,
                                 replay=list(self._tasks.values()))
        return UpdateWriter(self._client, self._target, self._interval)

    async def _noted(self) -> None:
        """Report a message that got its ``ts`` just now (best effort)."""
        ts = self._writer.ts
        if ts is None or ts in self.shown:
            return
        self.shown.append(ts)
        if self._on_shown is not None:
            try:
                await self._on_shown([f"{self._target.channel}/{t}" for t in self.shown])
            except Exception as err:  # a retake would post anew: complete, not lost
                log.warning("could not note the reply's message: %s", type(err).__name__)

    async def interrupted(self, *, notice: bool = True) -> None:
        """End a reply cut short: at shutdown a notice on the message shown so far and its
        stream stopped (the turn's next attempt edits it); when another replica took the
        turn over (``notice=False``) only the stream is stopped — that replica edits the
        message, and a late edit from here must not overwrite its answer."""
        writer = self._writer
        if writer.ts is None or (not notice and not isinstance(writer, StreamWriter)):
            return
        try:
            await writer.interrupt(("\n\n" if writer.text.strip() else "") + INTERRUPTED
                                   if notice else "")
        except Exception as err:
            log.info("could not mark the interrupted reply: %s", type(err).__name__)

    def _after_refusal(self, refused: StreamRefused) -> str | None:
        """The writer that goes on after a refused stream. A streamed message that only
        ran its course (expired, full) is followed by a new streamed message: the text it
        did not show is returned, to go there. Otherwise the rest is posted and edited
        from then on (``None``)."""
        if refused.kind in STREAM_ENDED and refused.ts \
                and refused.text.startswith(refused.shown):
            self._writer = self._new_writer()
            return refused.text[len(refused.shown):]
        self._streaming = False
        self._writer = UpdateWriter(self._client, self._target, self._interval,
                                     ts=refused.ts, text=refused.text, shown=refused.shown)
        return None

    async def _guarded(self, text: str | None, blocks: Sequence[dict[str, Any]] | None = None,
                       footer: str = "") -> str | None:
        """Append ``text`` (or finish with ``blocks``), going on in a new message when
        streaming is refused."""
        for _ in range(3):
            try:
                if text is not None:
                    await self._writer.append(text)
                    await self._noted()
                    return None
                ts = await self._writer.finish(blocks, footer)
                await self._noted()
                return ts
            except StreamRefused as refused:
                rest = self._after_refusal(refused)
                if text is not None:
                    text = rest or ""  # the refused text is in ``rest`` (or the writer)
                elif rest:
                    await self._guarded(rest)
                footer = ""
        return None

    async def _apply(self, ops: Sequence[str | None]) -> None:
        for op in ops:
            if op is None:
                await self._guarded(None, footer=CONTINUED
                                    if isinstance(self._writer, StreamWriter) else "")
                self._writer = self._new_writer()
            else:
                await self._guarded(op)

    async def watch_expiry(self) -> None:
        """Roll a streamed message over when it reaches its age while nothing arrives (a
        long tool call, a slow model): Slack would end it before the next event."""
        while True:
            writer = self._writer
            left = writer.time_left() if isinstance(writer, StreamWriter) else None
            await asyncio.sleep(0.5 if left is None else max(left, 0.01))
            async with self.lock:
                try:
                    await self._roll_if_due()
                except SEND_ERRORS as err:
                    log.info("rolling over an idle stream failed: %s", error_kind(err))

    async def _roll_if_due(self) -> None:
        """End a streamed message that has streamed for as long as one may: the answer
        goes on in the next one."""
        if self._writer.expired():
            cut = self._splitter.cut()
            if None not in cut:  # nothing of the answer in it yet (only tasks)
                cut = [None]
            await self._apply(cut)

    async def _task(self, chunk: dict[str, Any]) -> None:
        """A task chunk in the streamed message (kept for replay while it runs)."""
        if chunk.get("status") in ("in_progress", "pending"):
            self._tasks[str(chunk["id"])] = chunk
        else:
            self._tasks.pop(str(chunk["id"]), None)
        if not isinstance(self._writer, StreamWriter):
            return
        await self._roll_if_due()
        for _ in range(2):
            if not isinstance(self._writer, StreamWriter):
                return
            try:
                await self._writer.task(chunk)
                await self._noted()
                return
            except StreamRefused as refused:
                if rest := self._after_refusal(refused):
                    await self._guarded(rest)
            except SEND_ERRORS as err:  # progress is a nicety: never the end of a turn
                log.info("task not shown: %s", error_kind(err))
                return

    async def thinking(self, event: ThinkingEvent) -> None:
        """The model's reasoning: a "Thinking" task while it thinks, its text kept."""
        self._thinking += event.text
        if not self._thinking_open:
            self._thinking_open = True
            await self._task({"type": "task_update", "id": THINKING_ID,
                              "title": "Thinking…", "status": "in_progress"})

    async def _thought(self) -> None:
        """Close the "Thinking" task with what the model thought (once, whole: whether
        Slack appends ``details`` or replaces them, it shows the text once)."""
        if not self._thinking_open:
            return
        self._thinking_open = False
        if isinstance(self._writer, UpdateWriter):
            self._writer.context = self._thinking
        await self._task({"type": "task_update", "id": THINKING_ID, "title": "Thought",
                          "status": "complete", "details": short(self._thinking)})

    async def tool(self, activity: ToolActivity) -> None:
        """Show a tool's progress: a task in a streamed message, else a status line."""
        await self._thought()
        if isinstance(self._writer, StreamWriter):
            await self._task(task_chunk(activity))
            return
        for _ in range(2):
            try:
                await self._writer.tool(activity)
                return
            except StreamRefused as refused:
                self._streaming = False
                self._writer = UpdateWriter(self._client, self._target, self._interval,
                                             ts=refused.ts, text=refused.text,
                                             shown=refused.shown)
            except SEND_ERRORS as err:  # progress is a nicety: never the end of a turn
                log.info("tool status not shown: %s", error_kind(err))
                return

    async def status(self, event: StatusEvent) -> None:
        if event.tool is not None:
            await self.tool(event.tool)
            if event.tool.status == "in_progress":
                self._status_set = False  # the assistant status follows the tool
        if self._target.assistant and self._target.thread_ts and not self._status_set:
            self._status_set = True
            try:
                await self._client.assistant_threads_setStatus(
                    channel_id=self._target.channel, thread_ts=self._target.thread_ts,
                    status=event.text if event.tool else f"is {event.text}",
                    loading_messages=[event.text] if event.tool else list(LOADING))
            except Exception as err:  # a status is a nicety: never the end of a turn
                log.info("assistant.threads.setStatus failed: %s", error_kind(err))

    async def delta(self, event: DeltaEvent) -> None:
        await self._thought()
        await self._roll_if_due()
        await self._apply(self._splitter.feed(event.text))

    async def final(self, event: FinalEvent, seen_text: bool) -> str | None:
        await self._thought()
        await self._roll_if_due()
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
        blocks = feedback_blocks()
        if event.offer_person:
            blocks += person_blocks(event.conversation)
        ts = await self._guarded(None, blocks)
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
    reuse: Sequence[str] = (),
    on_shown: Callable[[list[str]], Awaitable[None]] | None = None,
    limits: StreamLimits = DEFAULT_LIMITS,
) -> Rendered:
    """Show one turn's reply events in Slack.

    ``on_start`` runs once, before anything is shown, unless the event is a duplicate.
    ``reuse``: ts of messages an interrupted attempt showed, edited instead of posting.
    ``on_shown`` gets the reply's messages (``channel/ts``) each time one is added.
    ``limits``: when a streamed message rolls over to the next.
    """
    renderer = _Renderer(client, target, limit=limit, interval=interval,
                         buffer_size=buffer_size, reuse=reuse, on_shown=on_shown,
                         limits=limits)
    if reuse and target.thread_ts is not None:
        # The interrupted attempt may have died mid-stream: end that stream first.
        for ts in reuse:
            try:
                await client.chat_stopStream(channel=target.channel, ts=ts)
            except SEND_ERRORS as err:
                log.debug("chat.stopStream of the earlier attempt: %s", error_kind(err))
    watchdog = asyncio.create_task(renderer.watch_expiry(), name="slack stream roll-over")
    try:
        try:
            return await _render(renderer, events, on_start)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    except asyncio.CancelledError as cancelled:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(renderer.interrupted(notice=LEASE_LOST not in
                                                        cancelled.args), INTERRUPT_SECONDS)
        raise


async def _render(renderer: _Renderer, events: AsyncIterator[ReplyEvent],
                  on_start: Callable[[], Awaitable[None]] | None) -> Rendered:
    seen_text = False
    async for event in events:
        if isinstance(event, DuplicateEvent):
            return Rendered("duplicate")
        if on_start is not None:
            start, on_start = on_start, None
            await start()
        async with renderer.lock:
            if isinstance(event, StatusEvent):
                await renderer.status(event)
            elif isinstance(event, ThinkingEvent):
                await renderer.thinking(event)
            elif isinstance(event, DeltaEvent):
                seen_text = True
                await renderer.delta(event)
            elif isinstance(event, FinalEvent):
                return Rendered("final", await renderer.final(event, seen_text))
            elif isinstance(event, ErrorEvent):
                await renderer.error(event)
                return Rendered("error")
    # The turn ended without a word (another replica holds it now): this attempt's stream
    # is stopped; its text is left to the other replica, which edits it.
    await renderer.interrupted(notice=False)
    return Rendered("error")
