"""Split Telegram HTML into messages of at most 4096 visible characters.

Telegram counts the text left after entity parsing, so tags cost nothing and ``&amp;``
costs one. A cut closes every open tag and the next part reopens them (a code block stays
a code block on both sides), and prefers a paragraph break, then a line break, then a
space. Only the whitespace at a cut is dropped, which Telegram would trim anyway.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

from bots.telegram.markdown import to_plain, visible_length

__all__ = ["MAX_MESSAGE", "split_html"]

MAX_MESSAGE = 4096
_ATOM = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*>|&#?[A-Za-z0-9]+;|[^<&]|[<&]")


@dataclass(frozen=True, slots=True)
class _Atom:
    raw: str
    weight: int  # visible UTF-16 units
    opens: str = ""  # tag name when an opening tag
    closes: str = ""  # tag name when a closing tag
    char: str = ""  # the visible character, when one


def _atoms(text: str) -> Iterator[_Atom]:
    for match in _ATOM.finditer(text):
        raw = match.group(0)
        if match.group(2):
            name = match.group(2).lower()
            yield _Atom(raw, 0, closes=name) if match.group(1) else _Atom(raw, 0, opens=name)
        else:
            char = html.unescape(raw) if raw.startswith("&") else raw
            yield _Atom(raw, visible_length(char), char=char)


def _stack(atoms: list[_Atom]) -> list[_Atom]:
    """The tags still open after ``atoms``."""
    stack: list[_Atom] = []
    for atom in atoms:
        if atom.opens:
            stack.append(atom)
        elif atom.closes:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i].opens == atom.closes:
                    del stack[i:]
                    break
    return stack


def _break_at(atoms: list[_Atom], limit: int) -> tuple[int, int]:
    """Where to cut ``atoms``: (end of the first part, start of the second)."""
    best: dict[str, int] = {}
    seen = 0
    in_pre = 0
    for i, atom in enumerate(atoms):
        if atom.opens == "pre":
            in_pre += 1
        elif atom.closes == "pre":
            in_pre -= 1
        seen += atom.weight
        if atom.char == "\n":
            prev = atoms[i - 1].char if i else ""
            best["para" if prev == "\n" and not in_pre else "line"] = i
        elif atom.char in (" ", "\t"):
            best["space"] = i
    positions = {k: sum(a.weight for a in atoms[:v]) for k, v in best.items()}
    for kind, share in (("para", 0.5), ("line", 0.5), ("space", 0.3)):
        if kind in best and positions[kind] >= limit * share:
            at = best[kind]
            end = at - 1 if kind == "para" else at
            return end, at + 1
    end = len(atoms)
    while end > 0 and atoms[end - 1].opens:  # don't leave an empty tag behind
        end -= 1
    return end, end


def _render(atoms: list[_Atom]) -> str:
    return "".join(a.raw for a in atoms) + "".join(
        f"</{a.opens}>" for a in reversed(_stack(atoms)))


def split_html(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Parts of ``text`` that each fit one message; no visible character is lost."""
    parts: list[str] = []
    current: list[_Atom] = []
    visible = 0
    for atom in _atoms(text):
        if atom.weight and visible + atom.weight > limit:
            end, resume = _break_at(current, limit)
            if end == 0 and resume == 0:  # nothing fits before: cut right here
                end = resume = len(current)
            head, tail = current[:end], current[resume:]
            parts.append(_render(head))
            current = _stack(head) + tail
            visible = sum(a.weight for a in current)
        current.append(atom)
        visible += atom.weight
    parts.append(_render(current))
    return [p for p in parts if to_plain(p).strip()]
