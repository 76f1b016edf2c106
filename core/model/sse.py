"""A small Server-Sent Events parser over httpx's line iterator.

Handles both framings we meet: OpenAI's ``data: {...}`` and DashScope's
``id:1`` / ``event:result`` / ``:HTTP_STATUS/200`` / ``data:{...}`` (no space).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "iter_sse"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str = ""
    comment: str = ""


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Group lines into events (a blank line ends one); a last unterminated event counts."""
    data: list[str] = []
    event = "message"
    ident = ""
    comment = ""
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent("\n".join(data), event, ident, comment)
            data, event, comment = [], "message", ""
            continue
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            ident = value
    if data:
        yield ServerSentEvent("\n".join(data), event, ident, comment)
