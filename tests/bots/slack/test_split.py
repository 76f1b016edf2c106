"""The Markdown splitter over many random texts: every part fits, nothing is lost."""

from __future__ import annotations

import random
import re

import pytest

from bots.slack.text import Splitter, split_markdown

_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})[a-z]*$", re.M)


def _document(rng: random.Random) -> str:
    """Prose paragraphs and code blocks, fenced with 3 to 12 backticks or tildes."""
    blocks = []
    for _ in range(rng.randint(1, 8)):
        words = [rng.choice(["a", "lorem", "ipsum", "x" * rng.randint(1, 60)])
                 for _ in range(rng.randint(1, 25))]
        if rng.random() < 0.5:
            marker = rng.choice("`~") * rng.randint(3, 12)
            lines = [" ".join(words[i:i + 4]) for i in range(0, len(words), 4)]
            blocks.append("\n".join([marker + rng.choice(["", "py"]), *lines, marker]))
        else:
            blocks.append(" ".join(words))
    return "\n\n".join(blocks)


def _content(text: str) -> str:
    """What a reader gets: the text without fence lines and whitespace."""
    return "".join(_FENCE_LINE.sub("", text).split())


def _streamed(text: str, limit: int, rng: random.Random) -> list[str]:
    splitter, parts, pos = Splitter(limit), [""], 0
    ops: list[str | None] = []
    while pos < len(text):
        step = rng.randint(1, 40)
        ops += splitter.feed(text[pos:pos + step])
        pos += step
    ops += splitter.flush()
    for op in ops:
        if op is None:
            parts.append("")
        else:
            parts[-1] += op
    return [p.strip("\n") for p in parts if p.strip()]


@pytest.mark.parametrize("seed", range(4))
def test_long_fences_never_push_a_part_over_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        text, limit = _document(rng), rng.choice([40, 57, 80, 200])
        for parts in (split_markdown(text, limit), _streamed(text, limit, rng)):
            assert all(len(p) <= limit for p in parts), (text, limit, parts)
            assert _content("\n".join(parts)) == _content(text), (text, limit, parts)
            for part in parts:  # each part renders on its own: its code blocks are closed
                fences = _FENCE_LINE.findall(part)
                assert len(fences) % 2 == 0, (text, limit, part)


def test_closing_fence_of_seven_tildes_fits() -> None:
    code = "~~~~~~~\n" + "\n".join(f"line {i}" for i in range(40)) + "\n~~~~~~~"
    parts = split_markdown(code, 60)
    assert len(parts) > 1
    assert all(len(p) <= 60 and p.startswith("~~~~~~~") and p.endswith("~~~~~~~")
               for p in parts)
