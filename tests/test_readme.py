"""The README's examples work as written: every `chatbridge …` command line in its code
blocks and tables is one the command line accepts, and it links nothing outside the
repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bots.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def example_commands() -> list[str]:
    """`chatbridge …` lines of the README's code blocks (after VAR=value prefixes)."""
    found: list[str] = []
    for kind, block in re.findall(r"```(sh|text)\n(.*?)```", README, flags=re.S):
        block = block.replace("\\\n", " ")  # a command continued on the next line
        for line in block.splitlines():
            if kind == "text" and not line.startswith("$ "):
                continue  # output, not a command
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            words = shlex.split(line) if line else []
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words.pop(0)
            if words[:1] == ["chatbridge"]:
                found.append(shlex.join(words[1:]))
    return found


def test_there_are_examples() -> None:
    assert len(example_commands()) >= 8


@pytest.mark.parametrize("command", example_commands())
def test_each_example_is_a_valid_command_line(command: str) -> None:
    _parser().parse_args(shlex.split(command))  # argparse exits (SystemExit) when not


def test_relative_links_stay_inside_the_repository() -> None:
    for target in re.findall(r"\]\((?!https?://|#)([^)]+)\)", README):
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target
    assert "../" not in README
