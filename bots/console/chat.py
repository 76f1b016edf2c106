"""``chatbridge chat``: an interactive, streaming terminal conversation."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from pathlib import Path

from bots.console.ask import console_request, read_images, status_stream, stream_turn
from bots.runtime import open_runtime
from bots.settings import Settings
from core.errors import InputError
from core.types import ErrorEvent

__all__ = ["run_chat"]

HELP = """Type a message and press Enter. Commands:
  /image PATH   attach an image to your next message
  /reset        start a new conversation (the old one is kept)
  /help         this help
  /exit         leave (Ctrl-D works too)"""


def _image_path(text: str) -> Path | None:
    """The file a /image command names, if it exists."""
    path = Path(text.strip()).expanduser()
    return path if path.is_file() else None


async def _read_line(prompt: str) -> str | None:
    """One line from stdin (``None`` at end of input), without blocking the event loop.

    A daemon thread rather than the default executor: Ctrl-C at the prompt must end the
    program at once, not after the next Enter.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def deliver(line: str | None) -> None:
        if not done.done():
            done.set_result(line)

    def read() -> None:
        try:
            line: str | None = input(prompt)
        except (EOFError, OSError, ValueError):
            line = None
        with contextlib.suppress(RuntimeError):  # the loop may be gone after Ctrl-C
            loop.call_soon_threadsafe(deliver, line)

    threading.Thread(target=read, name="chatbridge-stdin", daemon=True).start()
    return await done


async def run_chat(settings: Settings, *, conversation: str) -> int:
    """Chat until end of input; one message per line when stdin is not a terminal."""
    interactive = sys.stdin.isatty()
    failures = 0
    async with open_runtime(settings) as runtime:
        service = runtime.service
        if interactive:
            print(f"chatbridge · model {settings.model} · conversation {conversation!r} "
                  "· /help for commands")
        pending: list[str] = []
        while True:
            line = await _read_line("you> " if interactive else "")
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                break
            if text == "/help":
                print(HELP)
                continue
            if text == "/reset":
                await service.reset(platform="console", scope=f"console/{conversation}")
                pending.clear()
                print("(started a new conversation)")
                continue
            if text.startswith("/image "):
                path = _image_path(text.removeprefix("/image "))
                if path is not None:
                    pending.append(str(path))
                    print(f"(image attached: {path})")
                else:
                    print(f"chatbridge: no such file: {text[7:].strip()}", file=sys.stderr)
                continue
            try:
                images = read_images(pending)
            except InputError as err:
                print(f"chatbridge: {err.user_message}", file=sys.stderr)
                pending.clear()
                continue
            pending.clear()
            if interactive:
                sys.stdout.write("bot> ")
            result = await stream_turn(service, console_request(conversation, text, images),
                                       sys.stdout, status_stream())
            sys.stdout.write("\n")
            sys.stdout.flush()
            if isinstance(result, ErrorEvent):
                failures += 1
                print(f"chatbridge: {result.message}", file=sys.stderr)
            elif result.notice:
                print(f"chatbridge: {result.notice}", file=sys.stderr)
    return 1 if failures and not interactive else 0
