"""Transcripts: whole conversations with authors, times, staff messages, tool calls and the
knowledge-base passages each answer was given (``cited``: its text refers to the number)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from core.knowledge.models import MessageSource
from core.store import Store
from core.store.models import Conversation, Message, ToolCallRow

__all__ = ["Transcript", "conversation_lines", "find_conversations", "first_author",
           "load_transcripts",
           "to_jsonl", "to_markdown"]

_conv: Table = Conversation.__table__  # type: ignore[assignment]
_msg: Table = Message.__table__  # type: ignore[assignment]
_tools: Table = ToolCallRow.__table__  # type: ignore[assignment]
_sources: Table = MessageSource.__table__  # type: ignore[assignment]
WHO = {"user": "customer", "assistant": "bot", "staff": "staff"}


@dataclass(frozen=True, slots=True)
class Line:
    """One message of a transcript."""

    at: str
    role: str
    author: str
    text: str
    status: str
    model: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    # The passages an answer was given: number, title, heading, source, cited.
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Transcript:
    """One conversation."""

    id: int
    platform: str
    scope: str
    profile: str | None
    status: str
    created_at: str
    lines: list[Line]


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat(
        timespec="seconds")


def _find(conn: Connection, *, conversation: int | None, scope: str | None,
          user: str | None) -> list[Any]:
    query = select(_conv).order_by(_conv.c.id)
    if conversation is not None:
        query = query.where(_conv.c.id == conversation)
    elif scope is not None:
        query = query.where(_conv.c.scope_key == scope)
    elif user is not None:
        platform, _, author = user.partition(":")
        owned = select(_msg.c.conversation_id).where(_msg.c.author_id == author,
                                                     _msg.c.role == "user")
        query = query.where(_conv.c.platform == platform, _conv.c.id.in_(owned))
    return list(conn.execute(query).all())


def _lines(conn: Connection, conversation_id: int) -> list[Line]:
    rows = conn.execute(select(_msg).where(_msg.c.conversation_id == conversation_id)
                        .order_by(_msg.c.id)).all()
    calls: dict[int, list[dict[str, Any]]] = {}
    for call in conn.execute(select(_tools).where(_tools.c.conversation_id == conversation_id)
                             .order_by(_tools.c.message_id, _tools.c.round,
                                       _tools.c.position)).all():
        calls.setdefault(call.message_id, []).append({
            "name": call.name, "arguments": call.arguments, "status": call.status,
            "output": call.output})
    given: dict[int, list[Any]] = {}
    for source in conn.execute(select(_sources).join(
            _msg, _msg.c.id == _sources.c.message_id).where(
            _msg.c.conversation_id == conversation_id)
            .order_by(_sources.c.message_id, _sources.c.number)).all():
        given.setdefault(source.message_id, []).append(source)
    lines = []
    for row in rows:
        author = row.author_name or row.author_id or WHO.get(row.role, row.role)
        numbers = {int(n) for n in re.findall(r"\[(\d{1,2})\]", row.text or "")}
        sources = [{"number": s.number, "title": s.title, "heading": s.heading,
                    "source": s.source, "cited": s.number in numbers}
                   for s in given.get(row.id, [])]
        # A turn's tool calls hang on its user message; they are shown with the answer.
        lines.append(Line(_iso(row.created_at), row.role, author, row.text, row.status,
                          row.model, calls.get(row.id, []), sources))
    return lines


def find_conversations(*, conversation: int | None = None, scope: str | None = None,
                       user: str | None = None) -> Any:
    """Arguments check: exactly one of the three selectors."""
    given = [x for x in (conversation, scope, user) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --conversation, --scope, --user")
    if user is not None and ":" not in user:
        raise ValueError("--user takes PLATFORM:ID, e.g. telegram:111111111")
    return given[0]


async def load_transcripts(store: Store, *, conversation: int | None = None,
                           scope: str | None = None, user: str | None = None
                           ) -> list[Transcript]:
    """The conversations selected (oldest first), each with every message."""
    find_conversations(conversation=conversation, scope=scope, user=user)

    def work(conn: Connection) -> list[Transcript]:
        return [Transcript(c.id, c.platform, c.scope_key, c.profile, c.status,
                           _iso(c.created_at), _lines(conn, c.id))
                for c in _find(conn, conversation=conversation, scope=scope, user=user)]

    return await store.run(work, "reading the conversation")


async def conversation_lines(store: Store, *, platform: str, scope: str,
                             last: int) -> list[str]:
    """The open conversation's ``last`` messages as ``who: text`` lines (staff notices)."""
    def work(conn: Connection) -> list[str]:
        conv = conn.execute(select(_conv.c.id).where(
            _conv.c.platform == platform, _conv.c.scope_key == scope,
            _conv.c.status == "open")).scalar()
        if conv is None:
            return []
        rows = conn.execute(select(_msg.c.role, _msg.c.author_name, _msg.c.text).where(
            _msg.c.conversation_id == conv, _msg.c.status != "failed", _msg.c.text != "")
            .order_by(_msg.c.id.desc()).limit(last)).all()
        return [f"{r.author_name or WHO.get(r.role, r.role)}: {_short(r.text)}"
                for r in reversed(rows)]

    return await store.run(work, "reading recent messages")


async def first_author(store: Store, *, platform: str, scope: str) -> str | None:
    """Who wrote the first message of the open conversation under this key."""
    def work(conn: Connection) -> str | None:
        conv = select(_conv.c.id).where(_conv.c.platform == platform,
                                        _conv.c.scope_key == scope, _conv.c.status == "open")
        return conn.execute(select(_msg.c.author_id).where(
            _msg.c.conversation_id.in_(conv.scalar_subquery()), _msg.c.role == "user")
            .order_by(_msg.c.id).limit(1)).scalar()

    return await store.run(work, "reading who started the conversation")


def _short(text: str, size: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[:size - 1] + "…"


def to_markdown(transcripts: Sequence[Transcript]) -> str:
    """The transcripts as Markdown."""
    out: list[str] = []
    for t in transcripts:
        out.append(f"# Conversation {t.id} ({t.platform} {t.scope})")
        out.append(f"Profile: {t.profile or 'default'} · status: {t.status} · "
                   f"started {t.created_at}\n")
        for line in t.lines:
            tag = {"staff": " (staff)", "assistant": " (bot)"}.get(line.role, "")
            flag = "" if line.status == "ok" else f" [{line.status}]"
            out.append(f"**{line.author}**{tag} · {line.at}{flag}\n")
            if line.text:
                out.append(line.text + "\n")
            for call in line.tools:
                out.append(f"> tool `{call['name']}` {call['arguments']} → {call['status']}")
            if line.tools:
                out.append("")
            cited = [s for s in line.sources if s["cited"]]
            if cited:
                out.append("Sources: " + "; ".join(_source(s) for s in cited) + "\n")
            if len(cited) < len(line.sources):
                out.append("Passages given, not cited: " + "; ".join(
                    _source(s) for s in line.sources if not s["cited"]) + "\n")
    return "\n".join(out).rstrip() + "\n" if out else ""


def _source(s: dict[str, Any]) -> str:
    heading = s["heading"]
    if heading == s["title"] or heading.startswith(f"{s['title']} > "):
        heading = heading[len(s["title"]):].removeprefix(" > ")
    name = f"{s['title']} — {heading}" if heading else s["title"]
    return f"[{s['number']}] {name} ({s['source']})"


def to_jsonl(transcripts: Sequence[Transcript]) -> str:
    """One JSON object per message, with its conversation."""
    rows = []
    for t in transcripts:
        for line in t.lines:
            rows.append(json.dumps({"conversation": t.id, "platform": t.platform,
                                    "scope": t.scope, **asdict(line)}, ensure_ascii=False))
    return "".join(r + "\n" for r in rows)
