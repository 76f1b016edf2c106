"""Text both ways: Slack's mrkdwn markup into plain text, long Markdown into messages.

Pure functions and one small state machine; no I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

__all__ = ["Splitter", "command_word", "mentions", "plain_text", "split_markdown"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ANGLE = re.compile(r"<([^<>]+)>")
_USER = re.compile(r"^@([UW][A-Z0-9]+)(?:\|[^>]*)?$")


def mentions(text: str) -> set[str]:
    """User IDs mentioned in Slack markup (``<@U123>``)."""
    return {m.group(1) for m in (_USER.match(x) for x in _ANGLE.findall(text)) if m}


def plain_text(text: str, *, name_of: Callable[[str], str | None], drop_user: str = "") -> str:
    """Slack markup as a person reads it: ``<@U1>`` → ``@Ann``, links, entities.

    ``drop_user``'s mentions (the bot's own) are removed altogether.
    """

    def one(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner.startswith("@"):
            user, _, label = inner[1:].partition("|")
            if user == drop_user:
                return ""
            return "@" + (name_of(user) or label or user)
        if inner.startswith("#"):
            channel, _, label = inner[1:].partition("|")
            return "#" + (label or channel)
        if inner.startswith("!"):
            special, _, label = inner[1:].partition("|")
            return label or "@" + special.split("^", 1)[0]
        url, _, label = inner.partition("|")
        return f"{label} ({url})" if label and label != url else url

    return html.unescape(_ANGLE.sub(one, text)).strip()


COMMAND_WORDS = ("reset", "help", "summary", "compact")


def command_word(text: str) -> str | None:
    """``reset``, ``help``, ``summary`` or ``compact`` when that (or ``/reset``…) is the
    whole message; ``"malformed"`` for ``/reset …`` (…) with words after it; else ``None``."""
    word = text.strip().strip(".!?").lower()
    if word.startswith("/"):
        name, _, rest = word[1:].partition(" ")
        if name in COMMAND_WORDS:
            return "malformed" if rest.strip() else name
    return word if word in COMMAND_WORDS else None


class Splitter:
    """Cuts Markdown arriving in pieces into messages of at most ``limit`` characters.

    ``feed`` and ``flush`` return operations: a string to append to the current message,
    or ``None`` for "end this message, start the next". Messages end at paragraph
    boundaries once past three quarters of the limit, at line ends when a line would not
    fit, and mid-line only for a line longer than a message. A code block cut in two is
    closed and reopened with the same fence, so each message renders on its own.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 40)
        self.soft = self.limit * 3 // 4
        self._pending = ""
        self._size = 0
        self._at_line_start = True  # the current line has not been released in part
        self._fence: tuple[str, str] | None = None  # (opening line, marker)
        self._ends_with_newline = True
        self._fresh = True  # nothing but a reopened fence in the current message

    def feed(self, text: str) -> list[str | None]:
        """Take more text; returns what may be sent now."""
        self._pending += text
        ops: list[str | None] = []
        while (cut := self._pending.find("\n")) >= 0:
            line, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            ops += self._line(line)
        # Release a partial line early (streaming stays smooth) unless it may be a fence.
        # Whole words only, so that a later cut never falls inside one.
        pending = self._pending[: self._pending.rfind(" ") + 1]
        if pending and not (self._at_line_start and pending.lstrip(" ")[:1] in ("`", "~", "")):
            if self._size + len(pending) + self._reserve(pending) <= self.limit:
                self._pending = self._pending[len(pending):]
                ops += self._place(pending)
                self._at_line_start = False
        return ops

    def flush(self) -> list[str | None]:
        """The rest, at the end of the text."""
        rest, self._pending = self._pending, ""
        return self._line(rest) if rest else []

    def cut(self) -> list[str | None]:
        """End the current message here (a code block open is closed and reopened)."""
        return self._break()

    def _closes(self, fence: re.Match[str] | None) -> bool:
        """Whether a fence line ends the open code block."""
        return bool(fence and self._fence and fence.group(1)[0] == self._fence[1][0]
                    and len(fence.group(1)) >= len(self._fence[1])
                    and not fence.group(2).strip())

    def _reserve(self, line: str) -> int:
        """Room kept for closing the code block: a newline and its whole fence."""
        fence = _FENCE.match(line.rstrip("\n")) if self._at_line_start else None
        if self._fence:
            return 0 if self._closes(fence) else len(self._fence[1]) + 1
        return len(fence.group(1)) + 1 if fence else 0

    def _break(self) -> list[str | None]:
        if self._size == 0:
            return []
        ops: list[str | None] = []
        if self._fence:
            ops.append(("" if self._ends_with_newline else "\n") + self._fence[1])
        ops.append(None)
        self._size = 0
        self._fresh = True
        self._ends_with_newline = True
        if self._fence:
            opener = self._fence[0] + "\n"
            ops.append(opener)
            self._size = len(opener)
        return ops

    def _place(self, text: str) -> list[str | None]:
        ops: list[str | None] = []
        reserve = self._reserve(text)
        if self._at_line_start and self._size and self._size + len(text) + reserve > self.limit:
            ops += self._break()
        while self._size + len(text) + reserve > self.limit:
            room = self.limit - self._size - reserve
            cut = text.rfind(" ", 0, room) + 1 if room > 0 else 0
            if cut <= 0:
                if not self._fresh:
                    ops += self._break()  # the word goes whole into the next message
                    continue
                cut = max(room, 1)  # a word longer than a message: cut it
            ops.append(text[:cut])
            self._fresh = False
            self._size += cut
            self._ends_with_newline = text[cut - 1] == "\n"
            text = text[cut:]
            ops += self._break()
        if text:
            ops.append(text)
            self._fresh = False
            self._size += len(text)
            self._ends_with_newline = text.endswith("\n")
        return ops

    def _line(self, line: str) -> list[str | None]:
        if not self._at_line_start:  # the rest of a line already begun: never a fence
            ops = self._place(line)
            self._at_line_start = True
            return ops
        if not line.strip() and not self._fence and self._size >= self.soft:
            return self._break()
        fence = _FENCE.match(line.rstrip("\n"))
        ops = self._place(line)
        if fence:
            if self._fence is None:
                self._fence = (line.strip(), fence.group(1))
            elif self._closes(fence):
                self._fence = None
        return ops


def split_markdown(text: str, limit: int) -> list[str]:
    """``text`` as messages of at most ``limit`` characters (see ``Splitter``)."""
    splitter = Splitter(limit)
    parts: list[str] = [""]
    for op in [*splitter.feed(text), *splitter.flush()]:
        if op is None:
            parts.append("")
        else:
            parts[-1] += op
    return [p.strip("\n") for p in parts if p.strip()]
