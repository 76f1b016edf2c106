"""The staff notice's short summary: written by the profile's summary model, within a deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from core.errors import ChatbridgeError
from core.model.base import ModelClient
from core.types import ContextMessage, ModelCall, Sampling, TextChunk

__all__ = ["MIN_LINES", "SUMMARY_SECONDS", "summarise_for_staff"]

log = logging.getLogger(__name__)
SUMMARY_SECONDS = 5.0  # the notice waits at most this long for its summary
MIN_LINES = 3  # fewer recent messages than this are their own summary: no model call
INSTRUCTIONS = (
    "A customer conversation is being handed to a person on the support team. Summarise it "
    "for them in at most three short sentences: what the customer wants, what was already "
    "said or tried, and what they are waiting for. Plain text, no greeting, no advice.")


async def summarise_for_staff(model: ModelClient, model_name: str, lines: Sequence[str], *,
                              seconds: float = SUMMARY_SECONDS) -> str | None:
    """A few sentences on ``lines`` (``who: text``, oldest first), or ``None`` when there
    is too little to summarise or the model failed or ran out of time (the notice then
    shows the recent messages only)."""
    if len(lines) < MIN_LINES:
        return None
    call = ModelCall(model_name, (
        ContextMessage("system", INSTRUCTIONS),
        ContextMessage("user", "\n".join(lines)),
    ), Sampling(temperature=0.2, max_tokens=300))

    async def write() -> str:
        parts = [c.text async for c in model.stream(call, stream=False)
                 if isinstance(c, TextChunk)]
        return " ".join("".join(parts).split())

    try:
        text = await asyncio.wait_for(write(), seconds)
    except TimeoutError:
        log.warning("the handoff summary took over %g s; the notice goes without it", seconds)
        return None
    except ChatbridgeError as err:
        log.warning("the handoff summary failed (%s); the notice goes without it", err.kind)
        return None
    return text[:1500] or None
