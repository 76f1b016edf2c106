"""Loopback fake of the Qwen model APIs: Chat Completions, Responses and DashScope native.

Standard library only; wire formats follow /work/shared/reference/protocols.md sections A and B.
Tests: ``with FakeModelServer() as fake: fake.enqueue(Reply(...))``.  Script (benchmark):
``python -m tests.fakes.model_server --port N [--delay S]`` serves the default reply (after
``S`` seconds) until killed; ``GET /_fake/stats`` reports the requests it has seen and the
ones it is still answering (``{"requests": n, "in_flight": n}``), ``GET /_fake/last`` when
the newest model request arrived (``{"at": time.monotonic()}``).
``POST …/embeddings`` (protocols-2 section I) answers deterministic vectors (``embed_text``:
hashed words, so texts sharing words are close), at most 10 inputs a request, floats or
base64; ``embedding_status`` makes it answer an HTTP error instead.

Also scripted (protocols-2 H): a summary request (system prompt about a "running summary")
is answered, without using the reply queue, by keeping the lines of its input that start
with ``FACT:`` (``summary_replies`` scripts faults instead); explicit context caching follows
Model Studio's rules — ``cache_control: {"type": "ephemeral"}`` on content parts, at most 4
counted, lookup ≤ 20 blocks back from each marker, ≥ 1024 tokens, created after the
response, 5 minutes — and usage reports ``cached_tokens`` / ``cache_creation_input_tokens``.
Prompt tokens are counted from the request (≈ 4 characters a token) when a request carries
markers or ``count_tokens`` is set.
Video parts are checked against protocols-2 J (``video_problem``): a malformed one is
answered with HTTP 400, as Model Studio refuses it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import re
import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_DATA_URI_BYTES = 10_485_760  # protocols-2 J: max bytes per data-URI item
MODELS = ("qwen-plus", "qwen-max", "qwen-turbo", "qwen3-vl-plus", "qwen3.5-plus")
KINDS = ("ok", "error", "moderation_midstream", "drop", "no_finish", "hang")
OUTPUT_BLOCKED = "Output data may contain inappropriate content."
_INSPECT = "data_inspection_failed"
ERRORS: dict[int, tuple[str, str, str]] = {  # status: (compat code = type, native code, message)
    400: (_INSPECT, "DataInspectionFailed", "Input data may contain inappropriate content."),
    401: ("invalid_api_key", "InvalidApiKey", "Incorrect API key provided. "),
    403: ("access_denied", "AccessDenied", "Access denied."),
    404: ("model_not_found", "ModelNotFound", "Model not exist."),
    429: ("limit_requests", "Throttling.RateQuota",
          "Requests rate limit exceeded, please try again later."),
    500: ("internal_error", "InternalError",
          "An internal error has occured, please try again later or contact service support."),
    503: ("ModelUnavailable", "ModelUnavailable", "Model is unavailable, please try again later."),
}
_OTHER = ("invalid_parameter_error", "InvalidParameter", "Bad request.")


@dataclass
class Reply:
    """One scripted response; ``kind`` is one of KINDS."""

    kind: str = "ok"
    text: str = "Hello from the fake model."
    reasoning: str = ""
    chunk_size: int = 8
    status: int = 200  # for kind="error" (values < 400 mean 500)
    retry_after: str | None = None
    body: dict[str, Any] | None = None
    usage: tuple[int, int] = (11, 7)
    report_usage: bool = True  # False: no usage at all, as llama.cpp's server streams
    delay: float = 0.0
    chunk_delay: float = 0.0  # seconds between streamed events (a long answer)
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    # Tool calls to ask for, as (name, arguments JSON text); streamed with the arguments
    # split into ``chunk_size`` pieces. kind="drop" hangs up halfway through them.
    tool_calls: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown Reply kind {self.kind!r}")
        if self.tool_calls and self.finish_reason == "stop":
            self.finish_reason = "tool_calls"

    def call_ids(self) -> list[str]:
        """Ids of the tool calls (stable per reply object)."""
        if not hasattr(self, "_ids"):
            self._ids = [f"call_{uuid.uuid4().hex[:22]}" for _ in self.tool_calls]
        return self._ids

    def wire_calls(self) -> list[dict[str, Any]]:
        """The whole tool calls, as a non-streamed answer carries them."""
        return [{"id": cid, "type": "function", "index": i,
                 "function": {"name": name, "arguments": args}}
                for i, (cid, (name, args)) in enumerate(
                    zip(self.call_ids(), self.tool_calls, strict=True))]

    def call_fragments(self) -> list[list[dict[str, Any]]]:
        """Streamed ``tool_calls`` deltas: the name first (real id), then argument pieces
        with ``id: ""`` (as Qwen sends them), then a trailing empty-arguments delta."""
        out: list[list[dict[str, Any]]] = []
        for i, (cid, (name, args)) in enumerate(zip(self.call_ids(), self.tool_calls,
                                                    strict=True)):
            out.append([{"index": i, "id": cid, "type": "function",
                         "function": {"name": name, "arguments": ""}}])
            out += [[{"index": i, "id": "", "type": "function", "function": {"arguments": p}}]
                    for p in _pieces(args, self.chunk_size)]
            out.append([{"function": {"arguments": ""}, "index": i, "id": "",
                         "type": "function"}])
        return out

    def streamed_text(self) -> str:
        """The answer text a stream carries: all of it, or the first half for cut-off kinds."""
        full = self.kind in ("ok", "no_finish")
        return self.text if full else self.text[: len(self.text) // 2]


@dataclass
class Recorded:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case keys
    json: Any  # parsed body; None if absent or not JSON
    body: bytes = b""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]



SUMMARY_MARK = "running summary"
CACHE_MIN_TOKENS, CACHE_LOOKBACK, CACHE_MARKERS, CACHE_TTL = 1024, 20, 4, 300.0


def is_summary_request(body: dict[str, Any]) -> bool:
    """Whether a chat request is chatbridge's summariser asking for a summary."""
    messages = body.get("messages") or []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    return first.get("role") == "system" and SUMMARY_MARK in _text(first.get("content"))


def summarise(body: dict[str, Any]) -> str:
    """The scripted summary: every distinct line starting with ``FACT:``, in order."""
    seen: list[str] = []
    for message in body.get("messages") or []:
        for line in _text(message.get("content")).splitlines():
            line = line.strip()
            if line.startswith("FACT:") and line not in seen:
                seen.append(line)
    return "\n".join(seen) or "No facts yet."


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def count_tokens(text: str) -> int:
    """The fake's token count: about four characters a token."""
    return (len(text) + 3) // 4


def content_blocks(body: dict[str, Any]) -> list[tuple[str, Any, int, bool]]:
    """(role, part without marker, tokens, marked) for every content block, in order.

    Raises ``ValueError`` for markers the protocol does not allow."""
    blocks: list[tuple[str, Any, int, bool]] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if "cache_control" in message:
            raise ValueError("cache_control must be set on a content part")
        role, content = str(message.get("role")), message.get("content")
        if isinstance(content, str) or content is None:  # the same tokens as one text part
            text = content or ""
            blocks.append((role, {"type": "text", "text": text}, count_tokens(text), False))
            continue
        for part in content:
            part = dict(part)
            mark = part.pop("cache_control", None)
            if mark is not None and mark != {"type": "ephemeral"}:
                raise ValueError(f"unsupported cache_control {mark!r}")
            size = count_tokens(str(part.get("text", ""))) if part.get("type") == "text" else 85
            blocks.append((role, part, size, mark is not None))
    return blocks


def _data_url_problem(url: Any, kinds: tuple[str, ...]) -> str | None:
    if not isinstance(url, str) or not url.startswith(tuple(f"data:{k}/" for k in kinds)):
        return f"expected a data:{'|'.join(kinds)}/… URL, got {str(url)[:40]!r}"
    if len(url) > MAX_DATA_URI_BYTES:
        return f"Exceeded limit on max bytes per data-uri item : {MAX_DATA_URI_BYTES}"
    _, _, data = url.partition(";base64,")
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        return "a data URL that is not base64"
    return None


def video_problem(body: dict[str, Any], api: str, multimodal: bool) -> str | None:
    """Why the request's video parts are malformed (protocols-2 J), if they are.

    Chat Completions: ``{"type": "video", "video": [image data URLs…]}`` (``fps`` a
    positive number, optional: its placement is unconfirmed, so both readings pass) or
    ``{"type": "video_url", "video_url": {"url": "data:video/…"}}``; DashScope native
    (multimodal-generation only): ``{"video": [image data URLs…], "fps"?: n}``. The
    Responses API takes no video."""
    messages = body.get("messages")
    if messages is None:
        given = body.get("input")
        messages = given.get("messages") if isinstance(given, dict) else given
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            frames = None
            if api == "openai" and part.get("type") == "video":
                frames = part.get("video")
            elif api == "openai" and part.get("type") == "video_url":
                url = (part.get("video_url") or {}).get("url")
                return _data_url_problem(url, ("video",))
            elif api == "native" and "video" in part:
                if not multimodal:
                    return "video input needs the multimodal-generation endpoint"
                frames = part.get("video")
            elif api == "responses" and "video" in str(part.get("type", "")):
                return "the Responses API takes no video input"
            if frames is None:
                continue
            if not isinstance(frames, list) or not frames:
                return "a video's frame list must be a non-empty list of images"
            for frame in frames:
                if (problem := _data_url_problem(frame, ("image",))) is not None:
                    return problem
            fps = part.get("fps", 2)
            if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 10:
                return f"fps must be a number in (0, 10], got {fps!r}"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    fake: FakeModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up are not news
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked encoding
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection
    server: _Server
    raw_requestline: bytes
    hdrs: dict[str, str]  # request headers, lower-case names

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)
        super().finish()

    # ---------------------------------------------------------------- plumbing
    def parse_request(self) -> bool:
        """Lean stand-in for the stdlib parser (which runs email.parser on every request)."""
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        parts = self.requestline.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.close_connection = True
            return False
        self.command, self.path, self.request_version = parts
        hdrs: dict[str, str] = {}
        while (line := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            hdrs[name.strip().lower()] = value.strip()
        self.hdrs = hdrs
        conn = hdrs.get("connection", "").lower()
        self.close_connection = conn == "close" or (
            self.request_version != "HTTP/1.1" and conn != "keep-alive")
        if hdrs.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _record(self) -> Recorded:
        length = int(self.hdrs.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rec = Recorded(self.command, self.path.split("?", 1)[0], self.hdrs, parsed, body)
        self.server.fake._record(rec)
        return rec

    def _head(self, status: int, ctype: str, extra: dict[str, str], length: int = -1) -> bytes:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 f"Content-Type: {ctype}",
                 f"Content-Length: {length}" if length >= 0 else "Transfer-Encoding: chunked"]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(self, status: int, obj: Any, headers: dict[str, str], drop: bool = False
                   ) -> None:
        data = _dumps(obj)
        head = self._head(status, "application/json", headers, len(data))
        self.wfile.write(head + (data[: len(data) // 2] if drop else data))  # one send
        if drop:  # half the promised body, then hang up
            self._drop()

    def _stream(self, reply: Reply, content_type: str, events: list[bytes], tail: bytes) -> None:
        """Chunked SSE: one socket send per event; ``drop`` hangs up before ``tail``/the end."""
        out = self._head(200, content_type, {"Cache-Control": "no-cache", **reply.headers})
        for i, event in enumerate(events):  # wfile is unbuffered: each write is one send
            if i and reply.chunk_delay > 0 and self._pause(reply.chunk_delay):
                self._drop()
                return
            try:
                self.wfile.write(out + b"%x\r\n%s\r\n" % (len(event), event))
            except OSError:
                self.server.fake._hung_up()
                raise
            out = b""
        if reply.kind == "drop":  # (events is never empty, so the head went out)
            self._drop()
            return
        end = b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail) if tail else b"0\r\n\r\n"
        self.wfile.write(out + end)

    def _pause(self, seconds: float) -> bool:
        """Wait between streamed events; ``True`` when the stream must end (the server
        stops, or the client hung up: recorded in ``FakeModelServer.hangups``)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.server.fake._stopping.is_set():
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.01))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peeked = b""
                if not peeked:  # EOF: the client closed its end mid-stream
                    self.server.fake._hung_up()
                    return True
                time.sleep(max(end - time.monotonic(), 0))
                return False
        return False

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # ---------------------------------------------------------------- routing
    def do_GET(self) -> None:
        rec = self._record()
        if rec.path == "/_fake/stats":
            self._send_json(200, self.server.fake.stats(), {})
        elif rec.path == "/_fake/last":  # when the newest model request arrived
            self._send_json(200, {"at": self.server.fake.last_request}, {})
        elif rec.path in ("/compatible-mode/v1/models", "/v1/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "system"}
                    for m in MODELS]
            self._send_json(200, {"object": "list", "data": data}, {})
        else:
            self._send_json(404, {"code": "NotFound", "message": f"Not found: {rec.path}"}, {})

    def do_POST(self) -> None:
        rec = self._record()
        body = rec.json if isinstance(rec.json, dict) else {}
        if rec.path.endswith("/embeddings"):
            self._embeddings(body)
            return
        if rec.path.endswith("/chat/completions"):
            api, stream = "openai", body.get("stream") is True
        elif rec.path.endswith("/responses"):
            api, stream = "responses", body.get("stream") is True
        elif rec.path.endswith("-generation/generation"):
            api = "native"
            stream = (rec.headers.get("x-dashscope-sse", "").lower() == "enable"
                      or "text/event-stream" in rec.headers.get("accept", ""))
        else:
            self._send_json(404, {"code": "NotFound", "message": f"Not found: {rec.path}"}, {})
            return
        fake = self.server.fake
        fake._count(1)
        try:
            self._reply(fake, api, body, stream, "multimodal" in rec.path)
        finally:
            fake._count(-1)

    def _usage_of(self, fake: FakeModelServer, reply: Reply, body: dict[str, Any]
                  ) -> dict[str, Any]:
        """Chat Completions usage: scripted, or counted with the context cache's rules."""
        prompt, completion = reply.usage
        try:
            blocks = content_blocks(body)
        except ValueError:
            blocks = []
        marked = [i for i, b in enumerate(blocks) if b[3]][-CACHE_MARKERS:]
        if not marked and not fake.count_tokens:
            return {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}
        prompt = sum(b[2] for b in blocks) + 5  # the backend's own few uncached tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}
        if not marked:
            return usage
        hit, created = fake._cache_lookup(str(body.get("model")), blocks, marked)
        usage["prompt_tokens_details"] = {
            "text_tokens": prompt, "cached_tokens": hit,
            "cache_creation_input_tokens": created,
            "cache_creation": {"ephemeral_5m_input_tokens": created},
            "cache_type": "ephemeral"}
        return usage

    def _reply(self, fake: FakeModelServer, api: str, body: dict[str, Any], stream: bool,
               multimodal: bool) -> None:
        if api == "openai":
            try:
                content_blocks(body)
            except ValueError as err:
                self._error(api, Reply(kind="error"), 400, str(err))
                return
        problem = video_problem(body, api, multimodal)
        if problem is not None:
            self._error(api, Reply(kind="error"), 400, problem)
            return
        if api == "openai" and is_summary_request(body):
            reply = fake._next_summary_reply()
            if reply is None:
                reply = Reply(text=summarise(body))
        else:
            reply = fake._next_reply()
        if (reply.delay > 0 and fake._stopping.wait(reply.delay)) or reply.kind == "hang":
            fake._stopping.wait()  # hang: never answer; released by stop()
            self._drop()
            return
        if reply.kind == "error":
            self._error(api, reply)
        elif reply.kind == "moderation_midstream" and not stream:
            self._error(api, reply, 400, OUTPUT_BLOCKED)
        elif api == "openai":
            self._openai(reply, body, stream)
        elif api == "responses":
            self._responses(reply, body, stream)
        else:
            self._native(reply, body, stream, multimodal)

    def _error(self, api: str, reply: Reply, status: int = 0, message: str = "") -> None:
        status = status or (reply.status if reply.status >= 400 else 500)
        headers = dict(reply.headers)
        if reply.retry_after is not None:
            headers["Retry-After"] = reply.retry_after
        code, ncode, msg = ERRORS.get(status, ERRORS[500] if status >= 500 else _OTHER)
        etype = "invalid_request_error" if status in (401, 404) else code
        msg, rid = message or msg, str(uuid.uuid4())
        if reply.body is not None:
            err: dict[str, Any] = reply.body
        elif api in ("openai", "responses"):
            err = {"error": {"message": msg, "type": etype, "param": None, "code": code},
                   "request_id": rid}
        else:
            err = {"code": ncode, "message": msg, "request_id": rid}
        self._send_json(status, err, headers)

    # ---------------------------------------------------------------- embeddings (I)
    def _embeddings(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if fake.embedding_status:
            self._error("openai", Reply(kind="error", status=fake.embedding_status))
            return
        if not isinstance(texts, list) or not texts or len(texts) > 10:
            self._error("openai", Reply(kind="error", status=400),
                        message="batch size is invalid, it should not be larger than 10.")
            return
        dims = int(body.get("dimensions") or fake.embedding_dims)
        data = []
        for i, text in enumerate(texts):
            vector = embed_text(str(text), dims)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in texts)
        self._send_json(200, {"object": "list", "model": body.get("model"), "data": data,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, {})

    # ---------------------------------------------------------------- OpenAI-compatible (A)
    def _openai(self, reply: Reply, body: dict[str, Any], stream: bool) -> None:
        model = str(body.get("model") or "qwen-plus")
        cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())
        usage = self._usage_of(self.server.fake, reply, body)
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            if reply.tool_calls:
                message["tool_calls"] = reply.wire_calls()
            finish = None if reply.kind == "no_finish" else reply.finish_reason
            obj = {"choices": [{"message": message, "finish_reason": finish, "index": 0,
                                "logprobs": None}],
                   "object": "chat.completion", "usage": usage if reply.report_usage else None,
                   "created": created,
                   "system_fingerprint": None, "model": model, "id": cid}
            self._send_json(200, obj, reply.headers, drop=reply.kind == "drop")
            return

        def chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  use: dict[str, Any] | None = None) -> bytes:
            choices = [] if delta is None else [
                {"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}]
            return b"data: " + _dumps({
                "id": cid, "choices": choices, "created": created, "model": model,
                "object": "chat.completion.chunk", "service_tier": None,
                "system_fingerprint": None, "usage": use}) + b"\n\n"

        size = reply.chunk_size
        events = [chunk({"content": "", "role": "assistant"})]
        events += [chunk({"content": None, "reasoning_content": p})
                   for p in _pieces(reply.reasoning, size)]
        events += [chunk({"content": p}) for p in _pieces(reply.streamed_text(), size)]
        calls = [chunk({"content": None, "tool_calls": f}) for f in reply.call_fragments()]
        events += calls[: len(calls) // 2] if reply.kind == "drop" else calls
        if reply.kind == "ok":
            events.append(chunk({"content": ""}, reply.finish_reason))
            if (body.get("stream_options") or {}).get("include_usage") and reply.report_usage:
                events.append(chunk(None, use=usage))
        tail = b"data: [DONE]\n\n"
        if reply.kind == "moderation_midstream":  # error event, no [DONE]
            tail = b"data: " + _dumps({"error": {"message": OUTPUT_BLOCKED, "type": _INSPECT,
                                                 "param": None, "code": _INSPECT}}) + b"\n\n"
        self._stream(reply, "text/event-stream", events, tail)

    # ---------------------------------------------------------------- Responses API (F)
    def _responses(self, reply: Reply, body: dict[str, Any], stream: bool) -> None:
        """Model Studio's Responses API: bare-UUID ids, ``msg_`` item ids, ``x_details``;
        streamed as ``event:…`` / ``data:…`` with no space and no ``[DONE]``."""
        model = str(body.get("model") or "qwen3.5-plus")
        rid = str(uuid.uuid4())
        prompt, completion = reply.usage
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 3},
                 "output_tokens": completion,
                 "output_tokens_details": {"reasoning_tokens": 2 if reply.reasoning else 0},
                 "total_tokens": prompt + completion,
                 "x_details": [{"input_tokens": prompt, "output_tokens": completion,
                                "total_tokens": prompt + completion,
                                "x_billing_type": "response_api"}]}
        items: list[dict[str, Any]] = []
        if reply.reasoning:
            items.append({"id": f"msg_{uuid.uuid4()}", "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": reply.reasoning}],
                          "content": None, "encrypted_content": None, "status": None})
        text_item = {"id": f"msg_{uuid.uuid4()}", "type": "message", "role": "assistant",
                     "status": "completed",
                     "content": [{"type": "output_text", "text": reply.text, "annotations": []}]}
        if reply.text or not reply.tool_calls:
            items.append(text_item)
        for cid, (name, args) in zip(reply.call_ids(), reply.tool_calls, strict=True):
            items.append({"type": "function_call", "id": f"fc_{uuid.uuid4()}", "call_id": cid,
                          "name": name, "arguments": args, "status": "completed"})
        status = "incomplete" if reply.finish_reason == "length" else "completed"
        whole: dict[str, Any] = {
            "created_at": int(time.time()), "id": rid, "model": model, "object": "response",
            "output": items, "parallel_tool_calls": False, "status": status,
            "tool_choice": "auto", "tools": [], "usage": usage, "error": None}
        if status == "incomplete":
            whole["incomplete_details"] = {"reason": "max_output_tokens"}
        if not stream:
            self._send_json(200, whole, reply.headers, drop=reply.kind == "drop")
            return
        seq = iter(range(1, 1_000_000))

        def event(kind: str, **fields: Any) -> bytes:
            data = {"sequence_number": next(seq), "type": kind, **fields}
            return b"event:%s\ndata:%s\n\n" % (kind.encode(), _dumps(data))

        size = reply.chunk_size
        events = [event("response.created", response={**whole, "status": "queued",
                                                       "output": [], "usage": None}),
                  event("response.in_progress", response={**whole, "status": "in_progress",
                                                          "output": [], "usage": None})]
        for index, item in enumerate(items):
            skeleton = {**item, "status": "in_progress"}
            if item["type"] == "message":
                skeleton["content"] = []
            events.append(event("response.output_item.added", output_index=index,
                                item=skeleton))
            if item["type"] == "reasoning":
                # DashScope streams thinking as reasoning_text deltas (protocols-2 F.4).
                events += [event("response.reasoning_text.delta", item_id=item["id"],
                                 output_index=index, content_index=0, delta=p)
                           for p in _pieces(reply.reasoning, size)]
            elif item["type"] == "message":
                events.append(event("response.content_part.added", item_id=item["id"],
                                    output_index=index, content_index=0,
                                    part={"type": "output_text", "text": "",
                                          "annotations": []}))
                events += [event("response.output_text.delta", item_id=item["id"],
                                 output_index=index, content_index=0, delta=p, logprobs=[])
                           for p in _pieces(reply.streamed_text(), size)]
                if reply.kind != "ok":
                    continue
                events.append(event("response.output_text.done", item_id=item["id"],
                                    output_index=index, content_index=0, text=reply.text))
            else:
                pieces = [event("response.function_call_arguments.delta", item_id=item["id"],
                                output_index=index, delta=p)
                          for p in _pieces(item["arguments"], size)]
                events += pieces[: len(pieces) // 2] if reply.kind == "drop" else pieces
                if reply.kind == "drop":
                    break
                events.append(event("response.function_call_arguments.done",
                                    item_id=item["id"], output_index=index,
                                    arguments=item["arguments"]))
            events.append(event("response.output_item.done", output_index=index, item=item))
        tail = b""
        if reply.kind == "ok":
            events.append(event("response.completed", response=whole))
        elif reply.kind == "moderation_midstream":
            tail = event("response.failed", response={
                **whole, "status": "failed", "output": [], "usage": None,
                "error": {"code": "data_inspection_failed", "message": OUTPUT_BLOCKED}})
        self._stream(reply, "text/event-stream", events, tail)

    # ---------------------------------------------------------------- DashScope native (B)
    def _native(self, reply: Reply, body: dict[str, Any], stream: bool, multimodal: bool) -> None:
        rid = str(uuid.uuid4())
        prompt, completion = reply.usage

        def result(content: str, reasoning: str, finish: str | None, out: int,
                   calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            c: Any = ([{"text": content}] if content else []) if multimodal else content
            msg: dict[str, Any] = {"role": "assistant", "content": c,
                                   "reasoning_content": reasoning}
            if calls:
                msg["tool_calls"] = calls
            return {"output": {"choices": [{"finish_reason": finish, "message": msg}]},
                    "usage": {"input_tokens": prompt, "output_tokens": out,
                              "total_tokens": prompt + out},
                    "request_id": rid}

        if not stream:
            finish = None if reply.kind == "no_finish" else reply.finish_reason
            obj = result(reply.text, reply.reasoning, finish, completion, reply.wire_calls())
            self._send_json(200, obj, reply.headers, drop=reply.kind == "drop")
            return

        incremental = bool((body.get("parameters") or {}).get("incremental_output", False))
        size, text = reply.chunk_size, reply.streamed_text()
        steps = [(p, "") for p in _pieces(reply.reasoning, size)]  # (reasoning, content) pieces
        steps += [("", p) for p in _pieces(text, size)] or [("", "")]
        # Tool-call fragments ride on their own frames, after the text (incremental only).
        calls = reply.call_fragments()
        if reply.kind == "drop":
            calls = calls[: len(calls) // 2]
        frames: list[tuple[str, str, list[dict[str, Any]] | None]] = [
            (r, c, None) for r, c in steps] + [("", "", f) for f in calls]
        n, share = len(frames), 1.0 if reply.kind in ("ok", "no_finish") else 0.5
        events, reasoning_so_far, content_so_far = [], "", ""
        for i, (r_piece, c_piece, fragment) in enumerate(frames, 1):
            reasoning_so_far += r_piece
            content_so_far += c_piece
            finish = reply.finish_reason if reply.kind == "ok" and i == n else "null"
            out = round(completion * share * i / n)  # cumulative usage on every event
            data = (result(c_piece, r_piece, finish, out, fragment) if incremental
                    else result(content_so_far, reasoning_so_far, finish, out))
            events.append(b"id:%d\nevent:result\n:HTTP_STATUS/200\ndata:%s\n\n"
                          % (i, _dumps(data)))
        tail = b""
        if reply.kind == "moderation_midstream":
            err = {"code": "DataInspectionFailed", "message": OUTPUT_BLOCKED, "request_id": rid}
            tail = b"id:%d\nevent:error\n:HTTP_STATUS/400\ndata:%s\n\n" % (n + 1, _dumps(err))
        self._stream(reply, "text/event-stream;charset=UTF-8", events, tail)


def embed_text(text: str, dims: int = 64) -> list[float]:
    """A deterministic stand-in for an embedding model: hashed words and their stems
    (the first 5 letters), so texts sharing words point the same way."""
    vector = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        for feature in (word, word[:5]):
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            slot = int.from_bytes(digest[:4], "little") % dims
            vector[slot] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class FakeModelServer:
    """Threaded loopback server answering scripted Replies (FIFO queue, then ``default``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.default = Reply()
        self.summary_replies: deque[Reply] = deque()  # scripted answers to summary requests
        self.count_tokens = False  # count prompt tokens from every request
        self._caches: dict[tuple[str, str], tuple[int, float]] = {}  # prefix: tokens, expiry
        self._cache_swept = 0.0
        self.requests: list[Recorded] = []
        self.record = True  # False: keep no request log (long-running benchmark server)
        self.seen = 0  # model requests received (chat/generation POSTs)
        self.in_flight = 0  # of which not answered yet
        self.last_request = 0.0  # time.monotonic() of the newest (comparable across processes)
        self.embedding_dims = 64  # when a request names no ``dimensions``
        self.embedding_status = 0  # non-zero: /embeddings answers this HTTP error
        # time.monotonic() of each client hang-up noticed mid-stream (streams with a
        # chunk_delay notice within 10 ms)
        self.hangups: list[float] = []
        self._httpd = _Server((host, port), _Handler)  # bound now: url is known before start()
        self._httpd.fake = self
        self.host, self.port = host, int(self._httpd.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self.openai_base = self.url + "/compatible-mode/v1"
        self.dashscope_base = self.url + "/api/v1"

    def start(self) -> FakeModelServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                            name="fake-model-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging handlers and close every open connection."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def clear(self) -> None:
        """Forget recorded requests and queued replies; reset ``default`` to ``Reply()``."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.summary_replies.clear()
            self._caches.clear()
            self.count_tokens = False
            self.hangups.clear()
            self.default = Reply()
            self.embedding_status = 0

    def _next_summary_reply(self) -> Reply | None:
        with self._lock:
            return self.summary_replies.popleft() if self.summary_replies else None

    def _cache_lookup(self, model: str, blocks: list[tuple[str, Any, int, bool]],
                      marked: list[int]) -> tuple[int, int]:
        """(cached, created) tokens of a request with markers at ``marked``; the caches it
        creates exist from now on (the response is about to be sent)."""
        import hashlib

        keys, sizes, digest, total = [], [], hashlib.sha256(model.encode()), 0
        for role, part, size, _ in blocks:
            digest.update(_dumps([role, part]))
            keys.append(digest.hexdigest())
            total += size
            sizes.append(total)
        now = time.monotonic()
        with self._lock:
            live = self._caches
            if now > self._cache_swept + 10:  # expired entries go now and then
                self._cache_swept = now
                for key in [k for k, v in live.items() if v[1] <= now]:
                    del live[key]
            hit = 0
            for m in marked:
                for j in range(m, max(-1, m - CACHE_LOOKBACK - 1), -1):
                    if live.get((model, keys[j]), (0, 0.0))[1] > now:
                        hit = max(hit, sizes[j])
                        live[(model, keys[j])] = (sizes[j], now + CACHE_TTL)  # reset on hit
                        break
            created, covered = 0, hit
            for m in sorted(marked):
                if sizes[m] >= CACHE_MIN_TOKENS and live.get((model, keys[m]),
                                                             (0, 0.0))[1] <= now:
                    created += max(0, sizes[m] - covered)
                    covered = max(covered, sizes[m])
                    live[(model, keys[m])] = (sizes[m], now + CACHE_TTL)
        return hit, created

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, rec: Recorded) -> None:
        if self.record:
            with self._lock:
                self.requests.append(rec)

    def _count(self, step: int) -> None:
        with self._lock:
            self.in_flight += step
            if step > 0:
                self.seen += 1
                self.last_request = time.monotonic()

    def stats(self) -> dict[str, int]:
        """Model requests seen so far, and how many are still being answered."""
        with self._lock:
            return {"requests": self.seen, "in_flight": self.in_flight}

    def _hung_up(self) -> None:
        with self._lock:
            self.hangups.append(time.monotonic())

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Qwen model server (default reply).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before each answer (default: answer at once)")
    args = parser.parse_args(argv)
    server = FakeModelServer(args.host, args.port)
    server.record = False
    server.default = Reply(delay=args.delay)
    with server, contextlib.suppress(KeyboardInterrupt):
        print(f"fake model server listening on {server.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
