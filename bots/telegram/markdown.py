"""The model's Markdown as Telegram HTML (``parse_mode="HTML"``).

Built on markdown-it-py's token stream, so the output is well formed by construction:
every tag we open is closed, every ``<``, ``>`` and ``&`` of the text is escaped, and only
tags Telegram knows are used. Partial Markdown (an answer still streaming: an unclosed
``**``, a code fence without its end) is valid Markdown too, so it renders safely.

Telegram has no headings, lists or tables: headings become bold lines, list items get
bullets or numbers, tables become a monospaced block.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["markdown_to_html", "to_plain", "visible_length"]

_MD = MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])
_LINK_SCHEMES = ("http", "https", "tg", "mailto")
_LANG = re.compile(r"[^A-Za-z0-9_+#.-]")
_TAG = re.compile(r"<[^>]*>")
_INLINE_TAGS = {"strong": "b", "em": "i", "s": "s"}
_EMPTY = re.compile(r"<(b|i|s|blockquote)></\1>")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:")  # a link reference definition


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _link_ok(href: str) -> bool:
    scheme = urlsplit(href).scheme.lower()
    return scheme in _LINK_SCHEMES


def _plain_inline(tokens: Sequence[Token]) -> str:
    """Inline tokens as unformatted text (table cells, image alt text)."""
    parts: list[str] = []
    for tok in tokens:
        if tok.type in ("text", "code_inline", "html_inline"):
            parts.append(tok.content)
        elif tok.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif tok.type == "image":
            parts.append(_plain_inline(tok.children or ()))
    return "".join(parts)


def _inline(tokens: Sequence[Token]) -> str:
    out: list[str] = []
    links: list[bool] = []
    for tok in tokens:
        kind = tok.type
        if kind in ("text", "html_inline"):
            out.append(_esc(tok.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            out.append(f"<code>{_esc(tok.content)}</code>" if tok.content else "")
        elif kind.endswith("_open") and kind[:-5] in _INLINE_TAGS:
            out.append(f"<{_INLINE_TAGS[kind[:-5]]}>")
        elif kind.endswith("_close") and kind[:-6] in _INLINE_TAGS:
            out.append(f"</{_INLINE_TAGS[kind[:-6]]}>")
        elif kind == "link_open":
            href = str(tok.attrGet("href") or "")
            links.append(_link_ok(href))
            if links[-1]:
                out.append(f'<a href="{html.escape(href, quote=True)}">')
        elif kind == "link_close":
            if links and links.pop():
                out.append("</a>")
        elif kind == "image":
            alt = _esc(_plain_inline(tok.children or ())) or "image"
            src = str(tok.attrGet("src") or "")
            out.append(f'<a href="{html.escape(src, quote=True)}">{alt}</a>'
                       if _link_ok(src) else alt)
    return "".join(out)


def _table(tokens: Sequence[Token], start: int) -> tuple[str, int]:
    """A table as a monospaced block; returns it and the index after ``table_close``."""
    rows: list[list[str]] = []
    i = start
    while tokens[i].type != "table_close":
        tok = tokens[i]
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline" and rows:
            rows[-1].append(_plain_inline(tok.children or ()).strip())
        i += 1
    widths = [max((len(r[c]) for r in rows if c < len(r)), default=0)
              for c in range(max((len(r) for r in rows), default=0))]
    lines = [" | ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip()
             for r in rows]
    if len(lines) > 1:
        lines.insert(1, "-+-".join("-" * w for w in widths))
    body = "\n".join(lines)
    return (f"<pre>{_esc(body)}</pre>" if body.strip() else ""), i + 1


class _Blocks:
    """Collects block output, inserting the line breaks blocks need between them."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.need = 0  # newlines owed before the next content

    def emit(self, text: str) -> None:
        if not text:
            return
        if self.out and self.need:
            self.out.append("\n" * self.need)
        self.need = 0
        self.out.append(text)

    def close(self, tag: str, need: int) -> None:
        """Append a closing tag right after the content (no break before it)."""
        self.out.append(tag)
        self.need = max(self.need, need)

    def owe(self, need: int) -> None:
        self.need = max(self.need, need)


def _dropped_text(text: str, tokens: Sequence[Token]) -> bool:
    """Whether the parser left out lines with words in them.

    markdown-it stops parsing a block nested deeper than its ``maxNesting`` (20), and
    drops the rest of it silently: 25 levels of ``>`` would render as nothing at all.
    Every line with a letter or digit must lie in some inline, code or table token.
    """
    covered: set[int] = set()
    for tok in tokens:
        if tok.map and tok.type in ("inline", "fence", "code_block", "html_block", "tr_open"):
            covered.update(range(tok.map[0], tok.map[1]))
    return any(
        i not in covered and any(c.isalnum() for c in line) and not _REFERENCE.match(line)
        for i, line in enumerate(text.splitlines())
    )


def markdown_to_html(text: str) -> str:
    """Render Markdown as Telegram HTML (as plain, escaped text when it cannot be parsed
    whole, e.g. nested deeper than the parser goes)."""
    tokens = _MD.parse(text)
    if _dropped_text(text, tokens):
        return _esc(text.strip())
    blocks = _Blocks()
    lists: list[list[int]] = []  # per open list: [ordered (0/1), next number]
    quote_depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        kind = tok.type
        if kind == "inline":
            blocks.emit(_inline(tok.children or ()))
        elif kind == "paragraph_close":
            blocks.owe(1 if tok.hidden else 2)
        elif kind == "heading_open":
            blocks.emit("<b>")
            blocks.need = 0
        elif kind == "heading_close":
            blocks.close("</b>", 2)
        elif kind in ("bullet_list_open", "ordered_list_open"):
            blocks.owe(1)
            first = int(tok.attrGet("start") or 1)
            lists.append([1 if kind == "ordered_list_open" else 0, first])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            blocks.owe(1 if lists else 2)
        elif kind == "list_item_open":
            ordered, number = lists[-1]
            marker = f"{number}." if ordered else "•"
            lists[-1][1] += 1
            blocks.owe(1)
            blocks.emit("  " * (len(lists) - 1) + marker + " ")
            blocks.need = 0
        elif kind == "list_item_close":
            blocks.owe(1)
        elif kind == "blockquote_open":
            quote_depth += 1
            if quote_depth == 1:  # Telegram's blockquotes cannot nest
                blocks.emit("<blockquote>")
                blocks.need = 0
        elif kind == "blockquote_close":
            quote_depth -= 1
            if quote_depth == 0:
                blocks.close("</blockquote>", 2)
        elif kind in ("fence", "code_block"):
            code = tok.content.rstrip("\n")
            lang = _LANG.sub("", tok.info.split()[0]) if tok.info.strip() else ""
            if code.strip():
                inner = _esc(code)
                blocks.emit(f'<pre><code class="language-{lang}">{inner}</code></pre>'
                            if lang else f"<pre>{inner}</pre>")
            blocks.owe(2)
        elif kind == "hr":
            blocks.emit("——————")
            blocks.owe(2)
        elif kind == "table_open":
            rendered, i = _table(tokens, i)
            blocks.emit(rendered)
            blocks.owe(2)
            continue
        elif kind == "html_block":
            blocks.emit(_esc(tok.content.rstrip("\n")))
            blocks.owe(2)
        i += 1
    rendered = "".join(blocks.out)
    while (cleaned := _EMPTY.sub("", rendered)) != rendered:  # "# " or "**" mid-stream
        rendered = cleaned
    return rendered.strip()


def to_plain(html_text: str) -> str:
    """The visible text of Telegram HTML (for sending without ``parse_mode``)."""
    return html.unescape(_TAG.sub("", html_text))


def visible_length(text: str) -> int:
    """Length as Telegram limits it, in UTF-16 code units (never less than characters)."""
    return len(text.encode("utf-16-le")) // 2
