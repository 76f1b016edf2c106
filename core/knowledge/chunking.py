"""Split a Markdown document into passages by headings, with a little overlap."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Chunk", "split_markdown"]

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage and the heading path it sits under ("Returns > Refunds")."""

    heading: str
    text: str


def _sections(markdown: str) -> list[tuple[str, str]]:
    """(heading path, body) for each run of text under one heading."""
    path: list[tuple[int, str]] = []
    body: list[str] = []
    found: list[tuple[str, str]] = []
    fenced = False

    def flush() -> None:
        text = "\n".join(body).strip()
        if text:
            found.append((" > ".join(title for _, title in path), text))
        body.clear()

    for line in markdown.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            body.append(line)
            continue
        flush()
        level, title = len(match.group(1)), match.group(2).strip()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
    flush()
    return found


def _pieces(text: str, size: int) -> list[str]:
    """Paragraphs (and, for a very long one, sentences) no longer than ``size``."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        while len(para) > size:
            cut = para.rfind(". ", 0, size)
            cut = cut + 1 if cut > size // 3 else para.rfind(" ", 0, size)
            cut = cut if cut > 0 else size
            out.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            out.append(para)
    return out


def split_markdown(markdown: str, *, size: int = 1200, overlap: int = 200) -> list[Chunk]:
    """Passages of at most about ``size`` characters, each within one section; a
    section longer than that is split on paragraphs, and each part begins with the end
    (up to ``overlap`` characters) of the part before it."""
    chunks: list[Chunk] = []
    for heading, body in _sections(markdown):
        current: list[str] = []
        length = 0
        for piece in _pieces(body, size):
            if current and length + len(piece) > size:
                chunks.append(Chunk(heading, "\n\n".join(current)))
                tail = current[-1][-overlap:] if overlap else ""
                if tail and len(tail) < len(current[-1]):
                    tail = tail[tail.find(" ") + 1:]
                current, length = ([tail], len(tail)) if tail else ([], 0)
            current.append(piece)
            length += len(piece) + 2
        if current:
            chunks.append(Chunk(heading, "\n\n".join(current)))
    return chunks
