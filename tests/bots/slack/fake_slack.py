"""A loopback Slack Web API server that the real slack-sdk talks to; it records every call.

Standard library only, in a thread. Wire facts from /work/shared/reference/protocols.md
section C: bodies are JSON, form-encoded or a query string depending on the method; the
bot token comes as ``Authorization: Bearer``; 429 with ``Retry-After`` on demand. Private
files (``/files-pri/…``) are served only with the bot token; without it Slack answers
with its HTML sign-in page, and so does this fake.

Streamed messages keep Slack's limits (protocols-2 K.2): ``markdown_text`` at most 12,000
characters per call [docs.slack.dev/reference/methods/chat.appendStream]; and, where a test
sets them, a stream that expires ``stream_max_seconds`` after it started
(``message_not_in_streaming_state``, vercel/chat#607 — unconfirmed, ~5 min) and a total of
``stream_max_chars`` per streamed message (``msg_too_long``, CopilotKit#6063 — unconfirmed,
~12k). ``conversations.history`` serves ``history[channel]`` to a member
(``members``), else ``not_in_channel``, then the bot's own top-level messages there, newest
first; ``conversations.replies`` serves ``replies[(channel, ts)]`` (to a member) and a thread the
bot posted in, oldest first. Both
return a message's ``metadata`` (set by ``chat.postMessage``) only with
``include_all_metadata`` and honour ``oldest``; timestamps follow the clock, as Slack's do.
``hold`` keeps the next call of a method unanswered (carried out or not) to stand for a
sender that died waiting.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TEAM = "T0TEAM"
BOT_USER = "UBOT"
BOT_ID = "BBOT"
TOKEN = "xoxb-1111-2222-testtoken"


@dataclass
class Call:
    """One Web API call as the server saw it."""

    method: str  # e.g. "chat.postMessage"; "FILE" for a private file download
    args: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    """A message the bot posted, as it stands now."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str = ""
    blocks: list[Any] = field(default_factory=list)
    streamed: bool = False
    stopped: bool = False
    started: float = field(default_factory=time.monotonic)
    chunks: list[dict[str, Any]] = field(default_factory=list)  # non-text chunks, in order
    metadata: dict[str, Any] | None = None  # chat.postMessage's message metadata


def _chunk_text(args: dict[str, Any]) -> str:
    text = str(args.get("markdown_text") or "")
    for chunk in args.get("chunks") or []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            text += str(chunk.get("text") or "")
    return text


def _other_chunks(args: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in args.get("chunks") or []
            if isinstance(c, dict) and c.get("type") != "markdown_text"]


class FakeSlack:
    """The fake: start with ``with FakeSlack() as slack``; the API base is ``slack.api_url``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.users: dict[str, str] = {}  # user id -> display name
        self.files: dict[str, dict[str, Any]] = {}  # files.info objects by id
        self.blobs: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, content type)
        self._faults: dict[str, deque[tuple[int, str, dict[str, str]]]] = defaultdict(deque)
        self._ts = itertools.count(1)
        self.stream_max_seconds: float | None = None  # a stream expires after this long
        self.stream_max_chars: int | None = None  # a streamed message holds at most this
        self.history: dict[str, list[dict[str, Any]]] = {}  # conversations.history
        self.members: set[str] = set()  # channels the bot is in
        # conversations.replies: a thread's messages by (channel, thread_ts), oldest first
        self.replies: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.limit_errors: list[str] = []  # stream calls refused for a limit, in order
        self._holds: dict[str, deque[tuple[bool, threading.Event]]] = defaultdict(deque)
        self.held: list[str] = []  # methods whose call is being held, as they arrive
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.api_url = self.url + "/api/"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeSlack:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-slack")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            for holds in self._holds.values():
                for _, gate in holds:
                    gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ scripting
    def rate_limit(self, method: str, *, retry_after: int = 1, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and Retry-After."""
        for _ in range(times):
            self._faults[method].append(
                (429, "ratelimited", {"Retry-After": str(retry_after)}))

    def refuse(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``ok: false``."""
        for _ in range(times):
            self._faults[method].append((200, error, {}))

    def fail(self, method: str, *, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with an HTTP error and a plain-text
        body (a proxy's error page), or with ``status=0`` drop the connection unanswered."""
        for _ in range(times):
            self._faults[method].append((status, "", {}))

    def hold(self, method: str, *, carried_out: bool) -> threading.Event:
        """Keep the next call of ``method`` waiting until the returned event is set, then
        drop its connection unanswered: carried out first (Slack took it, the answer was
        lost) or not at all (it never got through)."""
        gate = threading.Event()
        with self._lock:
            self._holds[method].append((carried_out, gate))
        return gate

    def add_file(self, file_id: str, name: str, data: bytes, mime: str, **extra: Any) -> dict[
            str, Any]:
        """Host a private file; returns its Slack file object."""
        path = f"/files-pri/{TEAM}-{file_id}/download/{name}"
        self.blobs[path] = (data, mime)
        obj = {
            "id": file_id, "name": name, "title": name, "mimetype": mime,
            "filetype": name.rsplit(".", 1)[-1], "pretty_type": name.rsplit(".", 1)[-1].upper(),
            "size": len(data), "mode": "hosted", "is_external": False,
            "url_private": f"{self.url}/files-pri/{TEAM}-{file_id}/{name}",
            "url_private_download": self.url + path, **extra,
        }
        self.files[file_id] = obj
        return obj

    # ------------------------------------------------------------------ reading
    def of(self, method: str) -> list[Call]:
        """The calls of one method, in order."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        """Every method called, in order."""
        with self._lock:
            return [c.method for c in self.calls]

    def posted(self) -> list[Message]:
        """The bot's messages, oldest first."""
        with self._lock:
            return sorted(self.messages.values(), key=lambda m: float(m.ts))

    # ------------------------------------------------------------------ serving
    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def answer(self, method: str, args: dict[str, Any], headers: dict[str, str]
               ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """The status, the JSON body (``None``: a failure without one) and extra headers."""
        with self._lock:
            self.calls.append(Call(method, args, headers))
            held = self._holds[method].popleft() if self._holds.get(method) else None
            if held is not None:
                self.held.append(method)
                if held[0]:
                    self._ok(method, args)
        if held is not None:
            held[1].wait(60)
            return 0, None, {}  # the connection dropped: no answer
        with self._lock:
            if self._faults.get(method):
                status, error, extra = self._faults[method].popleft()
                if not error:
                    return status, None, extra
                return status, {"ok": False, "error": error}, extra
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        with self._lock:
            body = self._ok(method, args)
            if body.get("error") in ("msg_too_long", "message_not_in_streaming_state"):
                self.limit_errors.append(f"{method}: {body['error']}")
            return 200, body, {}

    def _ok(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or args.get("channel_id") or "")
        if method == "auth.test":
            return {"ok": True, "url": "https://test.slack.com/", "team": "Test Team",
                    "user": "chatbridge", "team_id": TEAM, "user_id": BOT_USER,
                    "bot_id": BOT_ID}
        if method.endswith("Stream") and len(str(args.get("markdown_text") or "")) > 12_000:
            return {"ok": False, "error": "msg_too_long"}
        if method in ("chat.postMessage", "chat.startStream"):
            ts = self._new_ts()
            text = _chunk_text(args) or str(args.get("text") or "")
            blocks = args.get("blocks") or []
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            for block in blocks:
                if block.get("type") == "markdown":
                    text = block["text"]
            if method == "chat.startStream" and self.stream_max_chars is not None \
                    and len(text) > self.stream_max_chars:
                return {"ok": False, "error": "msg_too_long"}
            metadata = args.get("metadata")
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            self.messages[ts] = Message(channel, ts, args.get("thread_ts"), text, blocks,
                                        streamed=method == "chat.startStream",
                                        chunks=_other_chunks(args), metadata=metadata)
            return {"ok": True, "channel": channel, "ts": ts,
                    "message": {"type": "message", "text": text, "bot_id": BOT_ID, "ts": ts}}
        if method in ("chat.appendStream", "chat.stopStream", "chat.update"):
            msg = self.messages.get(str(args.get("ts")))
            if msg is None:
                return {"ok": False, "error": "message_not_found"}
            if method == "chat.update":
                msg.text = _chunk_text(args) or str(args.get("text") or "")
                for block in args.get("blocks") or []:
                    if block.get("type") == "markdown":
                        msg.text = block["text"]
                msg.blocks = args.get("blocks") or msg.blocks
            else:
                if self.stream_max_seconds is not None and \
                        time.monotonic() - msg.started > self.stream_max_seconds:
                    msg.stopped = True  # Slack ends an expired stream with what it has
                if msg.stopped:
                    return {"ok": False, "error": "message_not_in_streaming_state"}
                if self.stream_max_chars is not None and \
                        len(msg.text) + len(_chunk_text(args)) > self.stream_max_chars:
                    return {"ok": False, "error": "msg_too_long"}
                msg.text += _chunk_text(args)
                msg.chunks += _other_chunks(args)
                if method == "chat.stopStream":
                    msg.stopped = True
                    msg.blocks = args.get("blocks") or []
            return {"ok": True, "channel": channel, "ts": msg.ts}
        if method == "users.info":
            user = str(args.get("user"))
            if user not in self.users:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": {"id": user, "name": user.lower(),
                                         "profile": {"display_name": self.users[user]}}}
        if method == "files.info":
            found = self.files.get(str(args.get("file")))
            return {"ok": True, "file": found} if found else {"ok": False,
                                                              "error": "file_not_found"}
        if method == "conversations.history":
            own = [m for m in self.messages.values() if m.channel == channel
                   and m.thread_ts is None]
            if channel not in self.members and not own:
                return {"ok": False, "error": "not_in_channel"}
            limit = int(args.get("limit") or 100)
            mine = self._listed(sorted(own, key=lambda m: -float(m.ts)), args)
            return {"ok": True, "messages": (self.history.get(channel, []) + mine)[:limit],
                    "has_more": False}
        if method == "conversations.replies":
            parent = str(args.get("ts") or "")
            seeded = self.replies.get((channel, parent), [])
            thread = [m for m in self.messages.values() if m.channel == channel
                      and (m.ts == parent or m.thread_ts == parent)]
            if channel not in self.members and not thread:
                return {"ok": False, "error": "not_in_channel"}
            limit = int(args.get("limit") or 100)
            return {"ok": True, "has_more": False, "messages": (seeded + self._listed(
                sorted(thread, key=lambda m: float(m.ts)), args))[:limit]}
        return {"ok": True}

    @staticmethod
    def _listed(messages: list[Message], args: dict[str, Any]) -> list[dict[str, Any]]:
        """Messages as conversations.history / replies return them (after ``oldest``)."""
        oldest = float(args.get("oldest") or 0)
        with_meta = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        out = []
        for m in messages:
            if float(m.ts) <= oldest:
                continue
            item: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text,
                                    "bot_id": BOT_ID, "user": BOT_USER}
            if m.thread_ts:
                item["thread_ts"] = m.thread_ts
            if with_meta and m.metadata:
                item["metadata"] = m.metadata
            out.append(item)
        return out

    def serve_file(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        with self._lock:
            self.calls.append(Call("FILE", {"path": path}, headers))
        blob = self.blobs.get(path)
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 200, b"<!DOCTYPE html><html>Sign in to Slack</html>", "text/html"
        if blob is None:
            return 404, b"not found", "text/plain"
        return 200, blob[0], blob[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeSlack:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if parts.path.startswith("/files-pri/"):
            status, body, ctype = self.fake.serve_file(parts.path, headers)
            self._send(status, body, ctype, {})
            return
        if not parts.path.startswith("/api/"):
            self._send(404, b"{}", "application/json", {})
            return
        args: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
        ctype = headers.get("content-type", "")
        if raw and ctype.startswith("application/json"):
            args.update(json.loads(raw))
        elif raw:
            args.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        for key in ("blocks", "chunks", "prompts"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        status, payload, extra = self.fake.answer(parts.path[len("/api/"):], args, headers)
        if payload is None and not status:
            self.close_connection = True  # hang up without an answer
            return
        if payload is None:
            self._send(status, b"upstream connect error", "text/plain", extra)
            return
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8",
                   extra)

    do_GET = _handle
    do_POST = _handle
