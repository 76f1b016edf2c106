"""Markdown answers as Telegram rich messages (Bot API 10.1 ``InputRichMessage`` blocks).

Used for answers HTML shows badly: Markdown tables (real ``table`` blocks), the model's
thinking (a ``thinking`` block in drafts, a closed ``details`` block in the message), and
long structured text (one rich message holds 32 768 characters; HTML is split at 4 096).
Block shapes: protocols-2 L.2 [telegram-bot-api-spec api.json; aiogram schema].

The converter is line based and total: every prefix of a streamed answer gives valid
blocks (an unclosed code fence is a ``pre`` block of what came so far, a table whose
separator row has not arrived is a table of its first row, an unclosed ``**`` stays
text). An answer over the rich limits (blocks, columns, length) is not rich: HTML splits it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

from core.knowledge.cite import label
from core.types import Citation

__all__ = ["MAX_RICH_CHARS", "rich_blocks", "sources_block", "wants_rich"]

MAX_RICH_CHARS = 32_768
MAX_BLOCKS = 500  # list items and table rows count
MAX_COLUMNS = 20
LONG_TEXT = 4_096  # longer structured text is one rich message instead of several
THINKING_DETAILS = "Thinking"
_ROW = re.compile(r"^\s*\|.*\|?\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)\s*$")
_INLINE = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")

Block = dict[str, Any]


def _has_table(text: str) -> bool:
    lines = text.splitlines()
    return any(_ROW.match(a) and _SEPARATOR.match(b) and "|" in b
               for a, b in itertools.pairwise(lines))


def wants_rich(text: str, thinking: str = "") -> bool:
    """Whether an answer is better shown rich: a table, thinking, or long structured text."""
    if thinking.strip() or _has_table(text):
        return True
    structured = any(_HEADING.match(line) or _ITEM.match(line) for line in text.splitlines())
    return structured and len(text) > LONG_TEXT


def _rich_text(text: str) -> str | list[Any]:
    """Inline Markdown (bold, code) as RichText; anything else stays as written."""
    parts: list[Any] = []
    last = 0
    for match in _INLINE.finditer(text):
        if match.start() > last:
            parts.append(text[last:match.start()])
        if match.group(1) is not None:
            parts.append({"type": "bold", "text": match.group(1)})
        else:
            parts.append({"type": "code", "text": match.group(2)})
        last = match.end()
    if not parts:
        return text
    if last < len(text):
        parts.append(text[last:])
    return parts


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip() for c in inner.split("|")]


def _table(rows: list[str]) -> Block:
    header = len(rows) > 1 and bool(_SEPARATOR.match(rows[1]))
    body = [r for i, r in enumerate(rows) if not (header and i == 1)]
    width = min(max(len(_cells(r)) for r in body), MAX_COLUMNS)
    cells = []
    for index, row in enumerate(body):
        values = (_cells(row) + [""] * width)[:width]
        cells.append([{"text": _rich_text(v), **({"is_header": True}
                                                  if header and index == 0 else {})}
                      for v in values])
    return {"type": "table", "cells": cells, "is_bordered": True}


def _blocks(markdown: str) -> list[Block]:
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append({"type": "paragraph", "text": _rich_text("\n".join(paragraph))})
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            code: Block = {"type": "pre", "text": "\n".join(lines[i + 1:end])}
            if fence.group(2):
                code["language"] = fence.group(2)
            blocks.append(code)
            i = end + 1
            continue
        if _ROW.match(line) and "|" in line.strip()[1:]:
            flush()
            end = i
            while end < len(lines) and _ROW.match(lines[end]):
                end += 1
            blocks.append(_table(lines[i:end]))
            i = end
            continue
        heading = _HEADING.match(line)
        item = _ITEM.match(line)
        if heading:
            flush()
            blocks.append({"type": "heading", "text": _rich_text(heading.group(2).strip()),
                           "size": len(heading.group(1))})
        elif item:
            flush()
            entry = {"blocks": [{"type": "paragraph", "text": _rich_text(item.group(1))}]}
            if blocks and blocks[-1]["type"] == "list":
                blocks[-1]["items"].append(entry)
            else:
                blocks.append({"type": "list", "items": [entry]})
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return blocks


def _count(blocks: list[Block]) -> int:
    total = 0
    for block in blocks:
        total += 1
        total += len(block.get("items", ())) + len(block.get("cells", ()))
        total += _count(block.get("blocks", []))
    return total


def rich_blocks(markdown: str, thinking: str = "", *, draft: bool) -> list[Block] | None:
    """The answer (and the thinking before it) as rich blocks; ``None`` when it exceeds
    what one rich message holds. Thinking is a ``thinking`` block in a draft (the only
    place Telegram takes one) and a closed ``details`` block in the message."""
    if len(markdown) + len(thinking) > MAX_RICH_CHARS:
        return None
    blocks: list[Block] = []
    if thinking.strip():
        if draft:
            blocks.append({"type": "thinking", "text": thinking.strip()})
        else:
            blocks.append({"type": "details", "summary": THINKING_DETAILS, "is_open": False,
                           "blocks": [{"type": "paragraph", "text": thinking.strip()}]})
    blocks += _blocks(markdown)
    if not blocks:
        blocks.append({"type": "paragraph", "text": "…"})
    if _count(blocks) > MAX_BLOCKS:
        return None
    return blocks


def sources_block(citations: Sequence[Citation]) -> Block:
    """The knowledge-base sources an answer cites as its last block: "Sources: [1] Title
    — Section; [2] …", a web page's name a link (``url`` RichText)."""
    text: list[Any] = [{"type": "bold", "text": "Sources:"}, " "]
    for index, c in enumerate(citations):
        if index:
            text.append("; ")
        name = label(c)
        text += [f"[{c.number}] ", {"type": "url", "text": name, "url": c.url} if c.url
                 else name]
    return {"type": "paragraph", "text": text}
