"""The console's slash commands: which line is a command, and a one-line hint for a bad one."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HELP", "Command", "parse"]

HELP = """Type a message and press Enter. Commands:
  /image PATH   attach an image to your next message
  /file PATH    attach a document, recording or video to your next message
  /reset        start a new conversation (the old one is kept)
  /summary      show the summary of the earlier conversation the model reads
  /compact      fold the conversation so far into that summary now
  /help         this help
  /exit         leave (Ctrl-D works too)
Ctrl-C stops an answer being written (what was written is kept); Ctrl-C at the prompt leaves.
To send a message that starts with "/", write "//" (//etc/hosts is sent as /etc/hosts)."""

_NO_ARGS = ("reset", "summary", "compact", "help", "exit", "quit")


@dataclass(frozen=True, slots=True)
class Command:
    """A line to act on: ``name`` is a command, or ``"message"`` (send ``arg`` to the model)
    or ``"hint"`` (show ``arg``; nothing is sent)."""

    name: str
    arg: str = ""


def parse(line: str) -> Command:
    """What a typed line asks for."""
    text = line.strip()
    if text.startswith("//"):
        return Command("message", text[1:])
    if not text.startswith("/"):
        return Command("message", text)
    word, _, rest = text[1:].partition(" ")
    name, rest = word.lower(), rest.strip()
    if name in _NO_ARGS:
        if rest:
            return Command("hint", f"/{name} takes nothing after it: type just /{name}.")
        return Command("exit" if name == "quit" else name)
    if name in ("image", "file"):
        if not rest:
            return Command("hint", f"/{name} needs a file: /{name} PATH (then type your "
                           "message).")
        return Command(name, rest)
    shown = word if len(word) <= 30 else word[:30] + "…"
    return Command("hint", f"Unknown command /{shown}: /help lists the commands "
                   "(//… sends a message starting with /).")
