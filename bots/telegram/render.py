"""The core's reply events onto Telegram.

Private chats stream with ``sendMessageDraft`` and end with one ``sendMessage`` per part;
groups and business chats post a first message and edit it (new parts become new
messages). Updates are throttled; flood control (429 ``retry_after``) pauses streaming and
is waited out for the final text; "message is not modified" is success; a parse error
resends the same text without formatting; 403 (the person blocked the bot) stops the turn.

Only the final text must arrive: a partial update that fails is never taken as shown, so
the final pass repeats it; a draft Telegram refuses ends drafting (typing goes on); a
partial message someone deleted is forgotten and its text sent anew.

Telegram has no idempotency key, so a new message is never sent twice on a guess: a
``sendMessage`` gets a long read timeout (``SEND_TIMEOUT``: the answer to a call that
cannot be repeated safely is worth waiting for), and one that still timed out is not
repeated — it probably arrived (``TimedOut`` is raised). Edits are safe to repeat. Each new
message is reported (``on_shown``) as soon as Telegram confirms it, so a retaken turn edits
the messages an interrupted attempt showed (``reuse``) instead of answering beside them;
a turn cancelled mid-answer (shutdown) ends its last message with a short notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    EndPointNotFound,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

from bots.posters import HANDOFF_START
from bots.telegram.markdown import markdown_to_html, to_plain
from bots.telegram.rich import rich_blocks, sources_block, wants_rich
from bots.telegram.split import split_html
from core.inbox import LEASE_LOST
from core.knowledge.cite import sources_markdown
from core.types import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
    ThinkingEvent,
)

__all__ = ["Blocked", "Replier", "Target", "retry_seconds"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SEND_TIMEOUT = 30.0  # seconds to wait for Telegram's answer to sendMessage
INTERRUPTED = "…interrupted; the answer continues shortly."
INTERRUPT_SECONDS = 3.0
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_TYPING_EVERY = 4.5  # a chat action shows for at most 5 s
# Bot API 10.3 (newer than PTB 22.8): a stop button on drafts; the draft stays on screen
# when pressed, until the final message (what was written) replaces it. Servers before
# 10.3 ignore parameters they do not know.
STOP_BUTTON = {"can_stop": True, "keep_on_stop": True}
THINKING_HTML_CHARS = 1_500  # the thinking quoted before an HTML answer, at most
# Bot API servers (by base URL) that said they have no rich-message methods (Bot API
# 10.1): learned once per process, then HTML is used there.
_NO_RICH: set[str] = set()
RICH_SHOWN = "\x01"  # in Replier._sent: a rich message (no HTML of it to edit)


def _no_such_method(err: TelegramError) -> bool:
    """The server does not know the method (an older or self-hosted Bot API)."""
    if isinstance(err, EndPointNotFound):
        return True
    reason = err.message.lower()
    return isinstance(err, BadRequest) and ("method not found" in reason
                                            or "unknown method" in reason)


def _thinking_html(thinking: str) -> str:
    """The model's reasoning as a short expandable quote before an HTML answer."""
    text = thinking.strip()
    if len(text) > THINKING_HTML_CHARS:
        text = text[:THINKING_HTML_CHARS].rstrip() + "…"
    return (f"<blockquote expandable><i>Thinking</i>\n{html.escape(text, quote=False)}"
            "</blockquote>\n\n") if text else ""


class Blocked(Exception):
    """Telegram refused with 403: the person blocked the bot, or it left the chat."""


class _Skipped(Exception):
    """A partial update was not sent (flood control or a network fault): nothing changed."""


def _gone(err: BadRequest) -> bool:
    """The message to edit no longer exists (someone deleted it)."""
    return "message to edit not found" in err.message.lower()


@dataclass(frozen=True, slots=True)
class Target:
    """Where an answer goes."""

    chat_id: int
    thread_id: int | None = None
    business_connection_id: str | None = None
    reply_to: int | None = None  # quote this message (groups)
    drafts: bool = False  # private chat: stream with sendMessageDraft
    draft_id: int = 1


def retry_seconds(err: RetryAfter) -> float:
    """How long flood control asks us to wait, in seconds."""
    with warnings.catch_warnings():  # int access is deprecated; timedelta is opt-in
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = err.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Replier:
    """Sends one answer (streamed or not) to one place."""

    def __init__(self, bot: Bot, target: Target, *, draft_interval: float = 0.5,
                 edit_interval: float = 1.5, attempts: int = 5, reuse: Sequence[int] = (),
                 on_shown: Callable[[list[int]], Awaitable[None]] | None = None,
                 stop_button: InlineKeyboardMarkup | None = None) -> None:
        self._bot = bot
        if reuse:  # a retake edits what the interrupted attempt showed: no drafts
            target = replace(target, drafts=False)
        self._target = target
        self._on_shown = on_shown
        self._interval = draft_interval if target.drafts else edit_interval
        self._attempts = attempts
        self._loop = asyncio.get_running_loop()
        self._next = 0.0  # loop time before which no partial update is sent
        # (message_id, html) of parts on screen; "\x00": shown by an earlier attempt
        self._sent: list[tuple[int, str]] = [(mid, "\x00") for mid in reuse]
        # The first message, if it was noted before the final answer came (the store
        # keeps it with the answer); later messages are not noted (no retake comes).
        self.noted_first: int | None = reuse[0] if reuse else None
        self._final_seen = False
        self._markup: InlineKeyboardMarkup | None = None  # on the final answer's last part
        self._partial = True  # partial updates (drafts, edits) still wanted
        self._thinking = ""  # the model's reasoning so far (profiles with show_thinking)
        self.answered = False  # the final answer (or the turn's error) was delivered
        # Edited answers (groups): a Stop button under the newest message while it streams;
        # the final text goes without it (``_marked``: messages that show it now).
        self._stop_button = None if target.drafts else stop_button
        self._marked: set[int] = set()

    @property
    def stoppable(self) -> bool:
        """Whether the streamed answer shows a Stop button (the turn must watch for it)."""
        return self._stop_button is not None

    @property
    def target(self) -> Target:
        """Where this answer goes."""
        return self._target

    @property
    def message_ids(self) -> list[int]:
        """The messages this answer occupies."""
        return [mid for mid, _ in self._sent]

    # ---------------------------------------------------------------- one call, robustly
    async def _deliver(self, call: Callable[[str, str | None], Awaitable[T]], text_html: str,
                       *, final: bool, resend: bool = True) -> T | None:
        """Run ``call(text, parse_mode)``; ``None`` when nothing changed ("not modified").

        A partial update that flood control or the network stops raises ``_Skipped``.
        ``resend=False`` (a new message): after a timeout it is repeated only once, as the
        first attempt may have arrived.
        """
        text: str = text_html
        mode: str | None = ParseMode.HTML
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(text, mode)
            except RetryAfter as err:
                wait = retry_seconds(err)
                self._next = max(self._next, self._loop.time() + wait)
                if not final:
                    raise _Skipped from err
                if attempt >= self._attempts:
                    raise
                log.info("Telegram flood control: waiting %.0f s", wait)
                await asyncio.sleep(wait)
            except BadRequest as err:
                reason = err.message.lower()
                if "message is not modified" in reason:
                    return None
                if "can't parse entities" in reason and mode is not None:
                    log.warning("Telegram could not parse our HTML (%s); sending plain text",
                                err.message)
                    text, mode = to_plain(text_html), None
                    continue
                raise
            except Forbidden as err:
                raise Blocked(err.message) from err
            except NetworkError as err:
                if not resend and isinstance(err, TimedOut):
                    raise  # it may have arrived: never sent twice on a guess
                if not final:
                    raise _Skipped from err
                if attempt >= self._attempts:
                    raise
                await asyncio.sleep(min(2.0**attempt, 10.0))

    async def _send(self, part: str, *, final: bool, last: bool = False) -> Message | None:
        target = self._target
        # The Stop button while the answer streams; the final's last part may carry
        # "Talk to a person".
        markup = (self._markup if last else None) if final else self._stop_button
        reply = (ReplyParameters(target.reply_to, allow_sending_without_reply=True)
                 if target.reply_to is not None and not self._sent else None)

        async def call(text: str, mode: str | None) -> Message:
            return await self._bot.send_message(
                target.chat_id, text, parse_mode=mode, message_thread_id=target.thread_id,
                business_connection_id=target.business_connection_id,
                reply_parameters=reply, link_preview_options=_NO_PREVIEW,
                read_timeout=SEND_TIMEOUT, reply_markup=markup,
            )

        try:
            message = await self._deliver(call, part, final=final, resend=False)
        except _Skipped:
            return None
        except TimedOut:
            if final:
                raise
            # A partial that may have arrived: no more partials (a second one could be a
            # duplicate); the final pass sends what is missing.
            self._partial = False
            return None
        if message is not None:
            self._sent.append((message.message_id, part))
            if markup is not None:
                self._marked.add(message.message_id)
            await self._noted()
        return message

    async def _noted(self) -> None:
        """Report the reply's messages after a new one appeared (best effort)."""
        if self._on_shown is None or self._final_seen:
            return
        try:
            await self._on_shown(self.message_ids)
        except Exception as err:  # a retake would send anew: complete, not lost
            log.warning("could not note the reply's message: %s", type(err).__name__)
            return
        if self.noted_first is None:
            self.noted_first = self._sent[0][0]

    async def interrupted(self) -> None:
        """End a reply cut short (shutdown): a notice on its last message, if any."""
        if not self._sent:
            return
        message_id, shown = self._sent[-1]
        body = shown if shown not in ("\x00", RICH_SHOWN) else ""
        text = (body + "\n\n" if body else "") + f"<i>{INTERRUPTED}</i>"
        try:
            await self._bot.edit_message_text(
                text, chat_id=self._target.chat_id, message_id=message_id,
                parse_mode=ParseMode.HTML,
                business_connection_id=self._target.business_connection_id)
        except Exception as err:
            log.info("could not mark the interrupted reply: %s", type(err).__name__)

    async def _edit(self, index: int, part: str, *, final: bool, last: bool = False) -> bool:
        """Bring part ``index`` up to date; ``False`` when its message is gone."""
        message_id, shown = self._sent[index]
        # The newest message keeps the Stop button while the answer streams; the final
        # edit (also of an unchanged text) takes it away, and may add "Talk to a person"
        # to the last part.
        if final:
            markup = self._markup if last else None
        else:
            markup = None if index < len(self._sent) - 1 else self._stop_button
        same_markup = (message_id not in self._marked if markup is None
                       else markup is self._stop_button and message_id in self._marked)
        if part == shown and same_markup:
            return True
        target = self._target

        async def call(text: str, mode: str | None) -> object:
            return await self._bot.edit_message_text(
                text, chat_id=target.chat_id, message_id=message_id, parse_mode=mode,
                business_connection_id=target.business_connection_id,
                link_preview_options=_NO_PREVIEW, reply_markup=markup,
            )

        try:
            await self._deliver(call, part, final=final)
        except _Skipped:
            return True  # not shown: the next update (at the latest the final one) repeats it
        except BadRequest as err:
            if not _gone(err):
                raise
            log.info("a message of the answer was deleted; sending its text anew")
            self._marked.discard(message_id)
            return False
        self._sent[index] = (message_id, part)  # shown, or it already showed this
        if markup is None:
            self._marked.discard(message_id)
        else:
            self._marked.add(message_id)
        return True

    async def _draft(self, part: str) -> None:
        target = self._target

        async def call(text: str, mode: str | None) -> bool:
            return await self._bot.send_message_draft(
                target.chat_id, target.draft_id, text=text,
                message_thread_id=target.thread_id, parse_mode=mode,
                api_kwargs=STOP_BUTTON,
            )

        try:
            await self._deliver(call, part, final=False)
        except _Skipped:
            pass

    # ---------------------------------------------------------------- rich messages
    def _rich_ok(self) -> bool:
        return self._bot.base_url not in _NO_RICH

    def _rich_refused(self, err: TelegramError) -> bool:
        """Learn from ``err`` whether the server lacks rich messages (then HTML is used)."""
        if not _no_such_method(err):
            return False
        if self._bot.base_url not in _NO_RICH:
            _NO_RICH.add(self._bot.base_url)
            log.warning("this Bot API server has no rich messages (%s); answers use HTML",
                        err.message)
        return True

    async def _rich_draft(self, blocks: list[dict[str, object]]) -> bool:
        """Show a rich draft; ``False`` when the server has no rich drafts."""
        target = self._target
        params: dict[str, object] = {"chat_id": target.chat_id, "draft_id": target.draft_id,
                                     "rich_message": {"blocks": blocks}, **STOP_BUTTON}
        if target.thread_id is not None:
            params["message_thread_id"] = target.thread_id

        async def call(text: str, mode: str | None) -> object:
            return await self._bot.do_api_request("sendRichMessageDraft", api_kwargs=params)

        try:
            await self._deliver(call, "", final=False)
        except _Skipped:
            pass
        except TelegramError as err:
            if self._rich_refused(err):
                return False
            raise
        return True

    async def _rich_send(self, blocks: list[dict[str, object]]) -> bool:
        """Send the final answer as one rich message; ``False``: the server has none."""
        target = self._target
        params: dict[str, object] = {"chat_id": target.chat_id,
                                     "rich_message": {"blocks": blocks}}
        for name, value in (("message_thread_id", target.thread_id),
                            ("business_connection_id", target.business_connection_id)):
            if value is not None:
                params[name] = value
        if target.reply_to is not None:
            params["reply_parameters"] = {"message_id": target.reply_to,
                                          "allow_sending_without_reply": True}

        async def call(text: str, mode: str | None) -> object:
            return await self._bot.do_api_request("sendRichMessage", api_kwargs=params,
                                                  read_timeout=SEND_TIMEOUT)

        try:
            result = await self._deliver(call, "", final=True, resend=False)
        except TelegramError as err:
            if self._rich_refused(err):
                return False
            if isinstance(err, BadRequest):  # refused, so not sent: HTML says it instead
                log.warning("Telegram refused a rich message (%s); sending HTML",
                            err.message)
                return False
            raise
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if isinstance(message_id, int):
            self._sent.append((message_id, RICH_SHOWN))
            await self._noted()
        return True

    async def _partial_update(self, text: str) -> None:
        """A partial update of the answer so far (and the thinking before it)."""
        thinking = self._thinking
        if self._target.drafts and self._partial and self._rich_ok() and \
                wants_rich(text, thinking):
            blocks = rich_blocks(text, thinking, draft=True)
            if blocks is not None:
                try:
                    if await self._rich_draft(blocks):
                        return
                except TelegramError as err:
                    self._partial = False
                    log.warning("Telegram refused a rich draft (%s); no more drafts in this "
                                "turn, the final answer follows", err.message)
                    return
        prefix = _thinking_html(thinking) if self._target.drafts else ""
        body = markdown_to_html(text) if text.strip() else ""
        await self._show_partial(split_html(prefix + body))

    # ---------------------------------------------------------------- what the person sees
    async def show(self, parts: list[str], *, final: bool) -> None:
        """Bring the screen up to ``parts`` (drafts until final; else edits and sends)."""
        if not parts:
            return
        if self._target.drafts and not final:
            await self._draft(parts[-1])
            return
        index = 0
        while index < len(parts):
            if index < len(self._sent):
                # While streaming only the newest part changes; the final pass fixes all.
                last = index == len(parts) - 1
                if (final or index == len(self._sent) - 1) and \
                        not await self._edit(index, parts[index], final=final, last=last):
                    del self._sent[index]  # deleted: the next message takes its place
                    continue
            elif await self._send(parts[index], final=final,
                                  last=index == len(parts) - 1) is None:
                return
            index += 1
        if final:
            for message_id, _ in self._sent[len(parts):]:  # a shorter final (an error)
                try:
                    await self._bot.delete_message(self._target.chat_id, message_id)
                except (BadRequest, NetworkError):
                    log.debug("could not delete an outdated part")
            del self._sent[len(parts):]

    async def _show_partial(self, parts: list[str]) -> None:
        """A partial update; a failure ends partial updates, never the answer."""
        if not self._partial:
            return
        try:
            await self.show(parts, final=False)
        except TelegramError as err:
            self._partial = False
            what = "drafts" if self._target.drafts else "partial updates"
            log.warning("Telegram refused a partial answer (%s); no more %s in this turn, "
                        "the final answer follows", err.message, what)

    async def say(self, text: str) -> None:
        """Send a plain sentence (a note, an error, a command's answer)."""
        await self.show(split_html(html.escape(text, quote=False)), final=True)

    async def _keep_typing(self) -> None:
        target = self._target
        while True:
            try:
                await self._bot.send_chat_action(
                    target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id,
                    business_connection_id=target.business_connection_id,
                )
            except Forbidden:
                return
            except (RetryAfter, NetworkError) as err:
                log.debug("typing indicator not sent: %s", err)
            await asyncio.sleep(_TYPING_EVERY)

    async def stream(self, events: AsyncIterator[ReplyEvent]) -> ReplyEvent | None:
        """Show a turn's reply events as they come; returns the last event."""
        typing = asyncio.create_task(self._keep_typing())
        try:
            return await self._stream(events, typing)
        except asyncio.CancelledError as cancelled:
            if LEASE_LOST not in cancelled.args:  # else the replica taking over edits it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.interrupted(), INTERRUPT_SECONDS)
            raise
        finally:
            typing.cancel()

    async def _stream(self, events: AsyncIterator[ReplyEvent],
                      typing: asyncio.Task[None] | None) -> ReplyEvent | None:
        text = ""
        last: ReplyEvent | None = None
        failure: Exception | None = None
        try:
            async for event in events:
                last = event
                if failure is not None:
                    continue  # let the core finish and store the turn; it can't be shown
                try:
                    await self._on_event(event, text)
                except (Blocked, TelegramError) as err:
                    failure = err
                    if typing is not None:
                        typing.cancel()
                if isinstance(event, DeltaEvent):
                    text += event.text
                if typing is not None and self._sent and not self._target.drafts \
                        and text.strip():
                    typing.cancel()  # the answer is on screen (not only a tool's status)
                    typing = None
        finally:
            if typing is not None:
                typing.cancel()
        if failure is not None:
            raise failure
        return last

    async def _final_rich(self, event: FinalEvent) -> bool:
        """Send the final answer rich when it wants it and nothing is on screen yet (a
        message already streamed by edits stays HTML); ``False``: send it as HTML."""
        if self._sent or not self._rich_ok() or not wants_rich(event.text, self._thinking):
            return False
        blocks = rich_blocks(event.text, self._thinking, draft=False)
        if blocks is None:
            return False
        if event.sources:
            blocks.append(sources_block(event.sources))
        if event.notice:
            blocks.append({"type": "paragraph", "text": event.notice})
        return await self._rich_send(blocks)

    async def _on_event(self, event: ReplyEvent, before: str) -> None:
        if isinstance(event, StatusEvent) and event.tool is not None:
            if event.tool.status == "in_progress":
                # The draft or the edited message shows what runs, under any text so far.
                line = f"<i>{html.escape(event.text, quote=False)}</i>"
                shown = markdown_to_html(before) if before.strip() else ""
                self._next = self._loop.time() + self._interval
                await self._show_partial(split_html(f"{shown}\n\n{line}" if shown else line))
        elif isinstance(event, DeltaEvent):
            text = before + event.text
            if text.strip() and self._loop.time() >= self._next:
                self._next = self._loop.time() + self._interval
                await self._partial_update(text)
        elif isinstance(event, ThinkingEvent):
            self._thinking += event.text
            if self._target.drafts and self._loop.time() >= self._next:
                self._next = self._loop.time() + self._interval
                await self._partial_update(before)
        elif isinstance(event, FinalEvent):
            self._final_seen = True
            # Sources go as the rich message's last block; the "Talk to a person" button
            # only on HTML.
            if not event.offer_person and await self._final_rich(event):
                self.answered = True
                return
            rendered = markdown_to_html(event.text) or (
                "" if event.partial and event.notice else html.escape("(no answer)"))
            if event.sources:
                rendered += "\n\n" + markdown_to_html(sources_markdown(event.sources))
            if event.notice and not rendered:
                rendered = f"<i>{html.escape(event.notice, quote=False)}</i>"
            elif event.notice:
                rendered += f"\n\n<i>{html.escape(event.notice, quote=False)}</i>"
            if event.offer_person:
                self._markup = InlineKeyboardMarkup([[InlineKeyboardButton(
                    "Talk to a person", callback_data=HANDOFF_START)]])
            await self.show(split_html(_thinking_html(self._thinking) + rendered), final=True)
            self.answered = True
        elif isinstance(event, ErrorEvent):
            self._final_seen = True
            await self.say(event.message)
            self.answered = True
