"""Cap how much of an answer is shown (``max_answer_chars``); the whole answer stays stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from core.types import DeltaEvent, FinalEvent, ReplyEvent

__all__ = ["DEFAULT_MAX_ANSWER_CHARS", "add_notice", "cap_answer", "cut_notice"]

# A Slack message's worth, or three Telegram messages.
DEFAULT_MAX_ANSWER_CHARS = 12_000


def cut_notice(shown: int, total: int) -> str:
    """The note under an answer that was cut."""
    return (f"(The answer was cut here: it is {total:,} characters long and only the first "
            f"{shown:,} are shown.)")


async def cap_answer(events: AsyncIterator[ReplyEvent], limit: int) -> AsyncIterator[ReplyEvent]:
    """``events`` with the answer text cut after ``limit`` characters, and a note saying so.

    Deltas stop at the limit (what streamed is exactly the start of the final text) and
    the final event's text is cut to the same prefix; the caller has stored it whole.
    Closing this stream closes ``events`` (the turn sees the consumer go away).
    """
    shown = 0
    try:
        async for event in events:
            if isinstance(event, DeltaEvent):
                room = limit - shown
                if room <= 0:
                    continue
                if len(event.text) > room:
                    event = DeltaEvent(event.text[:room])
                shown += len(event.text)
                yield event
            elif isinstance(event, FinalEvent) and len(event.text) > limit:
                notice = " ".join(n for n in (cut_notice(limit, len(event.text)),
                                              event.notice) if n)
                yield replace(event, text=event.text[:limit], notice=notice)
            else:
                yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


async def add_notice(events: AsyncIterator[ReplyEvent], note: str) -> AsyncIterator[ReplyEvent]:
    """``events`` with ``note`` added to the final answer's notice (an adapter's word on
    what it left out: an image it could not download, album items over the limit)."""
    try:
        async for event in events:
            if note and isinstance(event, FinalEvent):
                event = replace(event, notice=" ".join(n for n in (event.notice, note) if n))
            yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
