"""``chatbridge chat``: an interactive, streaming terminal conversation.

Ctrl-C while an answer is being written stops it (the part written is kept in the
database, marked partial) and returns to ``you>``; a second Ctrl-C, or one at the prompt,
leaves (exit code 130), always on a fresh line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bots.console.ask import (
    console_request,
    error_line,
    read_files,
    sources_text,
    status_stream,
    stream_turn,
)
from bots.console.commands import HELP, parse
from bots.console.memory import memory_command
from bots.runtime import open_runtime
from bots.settings import Settings
from core.errors import InputError
from core.images import prepare_image
from core.types import ErrorEvent, FinalEvent, Upload

__all__ = ["database_label", "run_chat"]

INTERRUPTED = 130
_LEAVE_WAIT = 2.0  # seconds a stopped answer gets to be stored when leaving at once


def database_label(url: str) -> str:
    """Where the memory is, for people: a SQLite file's path (``~`` for home) or the URL
    without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        with contextlib.suppress(ValueError):
            return str(Path("~") / path.resolve().relative_to(Path.home()))
        return str(path.resolve())
    return parsed.render_as_string(hide_password=True)


async def _read_line(prompt: str) -> str | None:
    """One line from stdin (``None`` at end of input), without blocking the event loop.

    A daemon thread rather than the default executor: leaving on Ctrl-C at the prompt must
    not wait for the next Enter.
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


class _CtrlC:
    """SIGINT: the first stops the running answer; a second one, or one with no answer
    running, asks to leave."""

    def __init__(self) -> None:
        self.turn: asyncio.Task[FinalEvent | ErrorEvent] | None = None
        self.leave = asyncio.Event()

    def __call__(self) -> None:
        turn = self.turn
        if turn is not None and not turn.done() and not turn.cancelling():
            turn.cancel()
        else:
            self.leave.set()

    async def until(self, work: asyncio.Future[Any]) -> bool:
        """Wait for ``work``; ``False`` if asked to leave first."""
        leaving: asyncio.Future[Any] = asyncio.ensure_future(self.leave.wait())
        try:
            await asyncio.wait({work, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
        return not self.leave.is_set()


def _attach(path_text: str, max_side: int) -> bytes:
    """The bytes of an image to attach, checked now rather than when the message is sent."""
    try:
        data = Path(path_text).expanduser().read_bytes()
    except OSError as err:
        raise InputError(user_message=f"cannot read image {path_text}: "
                         f"{err.strerror or type(err).__name__}") from err
    prepare_image(data, max_side=max_side)  # an ImageError if it is not a usable image
    return data


async def run_chat(settings: Settings, *, conversation: str,
                   profile: str | None = None) -> int:
    """Chat until end of input; one message per line when stdin is not a terminal."""
    interactive = sys.stdin.isatty()
    failures = 0
    ctrl_c = _CtrlC()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, ctrl_c)
    try:
        async with open_runtime(settings) as runtime:
            service = runtime.service
            if interactive:
                print(f"chatbridge · model {settings.model} · conversation {conversation!r} "
                      + (f"· profile {profile!r} " if profile else "")
                      + f"· memory {database_label(settings.database_url)} · /help for commands")
            pending: list[bytes] = []
            files: tuple[Upload, ...] = ()  # /file: documents, recordings, videos
            while True:
                reader = asyncio.ensure_future(_read_line("you> " if interactive else ""))
                if not await ctrl_c.until(reader):
                    reader.cancel()
                    sys.stdout.write("\n")
                    return INTERRUPTED
                line = reader.result()
                if line is None:
                    if interactive:
                        sys.stdout.write("\n")
                    break
                command = parse(line)
                if command.name == "message" and not command.arg:
                    continue
                if command.name == "exit":
                    break
                if command.name == "help":
                    print(HELP)
                    continue
                if command.name == "hint":
                    print(command.arg)
                    continue
                if command.name == "reset":
                    await service.reset(platform="console", scope=f"console/{conversation}")
                    pending.clear()
                    files = ()
                    print("(started a new conversation)")
                    continue
                if command.name in ("summary", "compact"):
                    print(await memory_command(service, command.name, conversation))
                    continue
                if command.name == "file":
                    try:
                        files += await asyncio.to_thread(read_files, [command.arg])
                    except InputError as err:
                        print(f"chatbridge: {err.user_message} (not attached)", file=sys.stderr)
                    else:
                        print(f"(file attached: {command.arg}; it goes with your next message)")
                    continue
                if command.name == "image":
                    try:
                        pending.append(await asyncio.to_thread(
                            _attach, command.arg, settings.max_image_side))
                    except InputError as err:
                        print(f"chatbridge: {err.user_message} (not attached)", file=sys.stderr)
                    else:
                        print(f"(image attached: {command.arg}; it goes with your next message)")
                    continue
                images, pending = tuple(pending), []
                attached, files = files, ()
                if interactive:
                    sys.stdout.write("bot> ")
                request = console_request(conversation, command.arg, images, attached,
                                          profile=profile)
                turn = asyncio.ensure_future(stream_turn(service, request, sys.stdout,
                                                         status_stream()))
                ctrl_c.turn = turn
                try:
                    if not await ctrl_c.until(turn):
                        await asyncio.wait({turn}, timeout=_LEAVE_WAIT)
                        sys.stdout.write("\n")
                        return INTERRUPTED
                finally:
                    ctrl_c.turn = None
                if turn.cancelled():
                    sys.stdout.write("\n(stopped: what was written is kept)\n")
                    sys.stdout.flush()
                    continue
                result = turn.result()
                sys.stdout.write("\n")
                sys.stdout.flush()
                if isinstance(result, ErrorEvent):
                    failures += 1
                    print(error_line(result), file=sys.stderr)
                else:
                    if result.sources:
                        print(sources_text(result))
                    if result.notice:
                        print(f"chatbridge: {result.notice}", file=sys.stderr)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        sys.stdout.flush()
    return 1 if failures and not interactive else 0
