"""Passages into the model's context with numbers; citations out; sources kept with answers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection

from core.knowledge.models import MessageSource
from core.knowledge.search import Passage
from core.types import Citation

__all__ = ["NOT_FOUND", "cited", "context_block", "label", "load_sources", "sources_markdown",
           "store_sources"]

_sources: Table = MessageSource.__table__  # type: ignore[assignment]

NOT_FOUND = ("I don't know: I found nothing about that in the documents I answer from. "
             "Please ask a person on the team.")

_INSTRUCTIONS = (
    "Answer from the numbered passages of the knowledge base below. Cite the passages you "
    "use with their numbers in square brackets, like [1] or [2][3], right after the "
    "sentence they support. If the passages do not contain the answer, say that you do not "
    "know and suggest asking a person on the team; do not guess and do not use other "
    "knowledge for facts about the business."
)


def label(p: Passage | Citation) -> str:
    """"Title — Section > Subsection" (the title not repeated when it heads the path)."""
    heading = p.heading
    if heading == p.title or heading.startswith(f"{p.title} > "):
        heading = heading[len(p.title):].removeprefix(" > ")
    return f"{p.title} — {heading}" if heading else p.title


def context_block(passages: Sequence[Passage]) -> str:
    """What is added to the system prompt: instructions, then ``[n]`` passages."""
    parts = [_INSTRUCTIONS, ""]
    for number, p in enumerate(passages, 1):
        parts.append(f"[{number}] {label(p)} ({p.source})\n{p.text}\n")
    return "\n".join(parts).rstrip()


def cited(answer: str, passages: Sequence[Passage]) -> tuple[Citation, ...]:
    """The passages the answer cites, in the order of their numbers."""
    numbers = {int(n) for n in re.findall(r"\[(\d{1,2})\]", answer)}
    return tuple(Citation(n, p.title, p.source, p.heading)
                 for n, p in enumerate(passages, 1) if n in numbers)


def sources_markdown(citations: Sequence[Citation]) -> str:
    """A Markdown footer naming each cited source, linked when it is a web page."""
    if not citations:
        return ""
    items = []
    for c in citations:
        name = label(c).replace("[", "(").replace("]", ")")
        items.append(f"[{c.number}] [{name}]({c.url})" if c.url else f"[{c.number}] {name}")
    return "Sources: " + "; ".join(items)


def store_sources(conn: Connection, message_id: int, passages: Sequence[Passage]) -> None:
    """Keep the passages an answer was given with (in the answer's transaction)."""
    if passages:
        conn.execute(insert(_sources), [
            {"message_id": message_id, "number": n, "chunk_id": p.chunk_id, "kb": p.kb,
             "source": p.source, "title": p.title[:512], "heading": p.heading, "text": p.text,
             "score": p.score}
            for n, p in enumerate(passages, 1)
        ])


def load_sources(conn: Connection, message_id: int) -> list[Citation]:
    """The passages stored with an answer (for transcripts)."""
    rows = conn.execute(select(_sources).where(_sources.c.message_id == message_id)
                        .order_by(_sources.c.number)).all()
    return [Citation(r.number, r.title, r.source, r.heading) for r in rows]
