"""``chatbridge ask``: one turn, printed, with an exit code a script can trust."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bots.runtime import open_runtime
from bots.settings import Settings
from core.errors import InputError
from core.knowledge.cite import label
from core.media.documents import MAX_DOCUMENT_BYTES
from core.media.video import MAX_VIDEO_BYTES, is_video
from core.service import ChatService
from core.types import (
    Author,
    ChatRequest,
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    ReplyEvent,
    StatusEvent,
    Upload,
)

__all__ = ["console_request", "error_line", "read_files", "read_images", "run_ask"]


def read_images(paths: Sequence[str]) -> tuple[bytes, ...]:
    """The bytes of each image file; a missing file is the person's error."""
    found: list[bytes] = []
    for name in paths:
        try:
            found.append(Path(name).expanduser().read_bytes())
        except OSError as err:
            raise InputError(user_message=f"cannot read image {name}: {err.strerror}") from err
    return tuple(found)


def read_files(paths: Sequence[str]) -> tuple[Upload, ...]:
    """Each document, recording or video file as an upload (its name and bytes); a
    missing file is the person's error, as is one larger than the limit for its kind."""
    found: list[Upload] = []
    for name in paths:
        path = Path(name).expanduser()
        limit = MAX_VIDEO_BYTES if is_video(b"", path.name) else MAX_DOCUMENT_BYTES
        try:
            if path.stat().st_size > limit:
                raise InputError(user_message=f"{name} is larger than "
                                 f"{limit // (1024 * 1024)} MB")
            found.append(Upload(path.name, path.read_bytes()))
        except OSError as err:
            raise InputError(user_message=f"cannot read file {name}: {err.strerror}") from err
    return tuple(found)


def console_request(
    conversation: str, text: str, images: tuple[bytes, ...] = (),
    files: tuple[Upload, ...] = (), profile: str | None = None,
) -> ChatRequest:
    """A core request from the terminal (answered as ``profile``, or the default one)."""
    import getpass

    return ChatRequest(
        platform="console", scope=f"console/{conversation}",
        author=Author(getpass.getuser(), getpass.getuser()), text=text,
        event_id=f"console-{uuid.uuid4()}", images=images, files=files, profile=profile,
    )


def usage_dict(event: FinalEvent) -> dict[str, int]:
    """Usage of a turn as JSON-ready numbers (with the context cache's, when it was used)."""
    u = event.usage
    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
             "total_tokens": u.total_tokens, "cached_tokens": u.cached_tokens,
             "reasoning_tokens": u.reasoning_tokens}
    if u.cache_creation_tokens:
        usage["cache_creation_tokens"] = u.cache_creation_tokens
    return usage


DIM, UNDIM = "\x1b[2m", "\x1b[0m"


def status_stream() -> TextIO | None:
    """Where tool status lines go: stderr when it is a terminal (a pipe stays clean)."""
    return sys.stderr if sys.stderr.isatty() else None


async def stream_turn(
    service: ChatService, request: ChatRequest, out: TextIO | None,
    status: TextIO | None = None,
) -> FinalEvent | ErrorEvent:
    """Run one turn, echoing text deltas to ``out`` as they arrive and what tools do to
    ``status`` (one dim line each)."""
    last: ReplyEvent | None = None
    wrote = False
    midline = False  # answer text was written since the last line break
    async for event in service.handle(request):
        tool = event.tool if isinstance(event, StatusEvent) else None
        if tool is not None and tool.status == "in_progress" and status is not None:
            status.write(("\n" if midline else "") + f"{DIM}· {tool.title}{UNDIM}\n")
            status.flush()
            midline = False
        if isinstance(event, DeltaEvent) and out is not None:
            out.write(event.text)
            out.flush()
            wrote = True
            midline = not event.text.endswith("\n")
        last = event
    if isinstance(last, ErrorEvent) and wrote and out is not None:
        out.write("\n[answer withdrawn]")  # e.g. moderation stopped it mid-stream
        out.flush()
    if isinstance(last, FinalEvent | ErrorEvent):
        return last
    return ErrorEvent("duplicate", "This message was already answered.")


def sources_text(result: FinalEvent) -> str:
    """The cited knowledge-base sources, one a line (empty when none)."""
    lines = [f"[{c.number}] {label(c)} ({c.source})" for c in result.sources]
    return "\n".join(["Sources:", *lines]) if lines else ""


# Turns that failed on what the person gave (exit 2), not on a service (exit 1).
INPUT_KINDS = frozenset({"bad_input", "bad_image", "bad_document", "bad_audio", "bad_video"})


def error_line(result: ErrorEvent) -> str:
    """The stderr line of a turn with no answer: the person's sentence, then for the
    operator what failed and where (the URL and the cause), when known."""
    return f"chatbridge: {result.message}" + (f" ({result.detail})" if result.detail else "")


async def run_ask(
    settings: Settings, *, conversation: str, text: str, image_paths: Sequence[str],
    as_json: bool, file_paths: Sequence[str] = (), profile: str | None = None,
) -> int:
    """Ask once; print the reply (or one error line on stderr) and return the exit code."""
    images = read_images(image_paths)
    files = read_files(file_paths)
    async with open_runtime(settings) as runtime:
        request = console_request(conversation, text, images, files, profile)
        result = await stream_turn(runtime.service, request, None if as_json else sys.stdout,
                                   None if as_json else status_stream())
    if isinstance(result, ErrorEvent):
        sys.stdout.flush()
        if as_json:
            print(json.dumps({"error": result.message, "kind": result.kind,
                              "detail": result.detail, "conversation": conversation},
                             ensure_ascii=False))
        print(error_line(result), file=sys.stderr)
        return 2 if result.kind in INPUT_KINDS else 1
    if as_json:
        print(json.dumps({
            "reply": result.text, "conversation": conversation, "model": result.model,
            "usage": usage_dict(result), "latency_ms": result.latency_ms,
            "partial": result.partial,
            "sources": [{"n": c.number, "title": c.title, "heading": c.heading,
                         "source": c.source} for c in result.sources],
        }, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        if result.sources:
            print(sources_text(result))
    if result.notice:
        print(f"chatbridge: {result.notice}", file=sys.stderr)
    return 0
