"""Loopback fake of the Qwen model APIs: OpenAI-compatible and DashScope native.

Standard library only; wire formats follow /work/shared/reference/protocols.md sections A and B.
Tests: ``with FakeModelServer() as fake: fake.enqueue(Reply(...))``.  Script (benchmark):
``python -m tests.fakes.model_server --port N [--delay S]`` serves the default reply (after
``S`` seconds) until killed; ``GET /_fake/stats`` reports the requests it has seen and the
ones it is still answering (``{"requests": n, "in_flight": n}``).
``POST …/embeddings`` (protocols-2 section I) answers deterministic vectors (``embed_text``:
hashed words, so texts sharing words are close), at most 10 inputs a request, floats or
base64; ``embedding_status`` makes it answer an HTTP error instead.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import re
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
    chunk_delay: float = 0.0  # seconds between stream events (a slowly written answer)
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown Reply kind {self.kind!r}")

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
        for event in events:  # wfile is an unbuffered socket writer: each write is one send
            self.wfile.write(out + b"%x\r\n%s\r\n" % (len(event), event))
            out = b""
            if reply.chunk_delay > 0 and self.server.fake._stopping.wait(reply.chunk_delay):
                self._drop()
                return
        if reply.kind == "drop":  # (events is never empty, so the head went out)
            self._drop()
            return
        end = b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail) if tail else b"0\r\n\r\n"
        self.wfile.write(out + end)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # ---------------------------------------------------------------- routing
    def do_GET(self) -> None:
        rec = self._record()
        if rec.path == "/_fake/stats":
            self._send_json(200, self.server.fake.stats(), {})
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

    def _reply(self, fake: FakeModelServer, api: str, body: dict[str, Any], stream: bool,
               multimodal: bool) -> None:
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
        elif api == "openai":
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
        prompt, completion = reply.usage
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            finish = None if reply.kind == "no_finish" else reply.finish_reason
            obj = {"choices": [{"message": message, "finish_reason": finish, "index": 0,
                                "logprobs": None}],
                   "object": "chat.completion", "usage": usage if reply.report_usage else None,
                   "created": created,
                   "system_fingerprint": None, "model": model, "id": cid}
            self._send_json(200, obj, reply.headers, drop=reply.kind == "drop")
            return

        def chunk(delta: dict[str, Any] | None, finish: str | None = None,
                  use: dict[str, int] | None = None) -> bytes:
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
        if reply.kind == "ok":
            events.append(chunk({"content": ""}, reply.finish_reason))
            if (body.get("stream_options") or {}).get("include_usage") and reply.report_usage:
                events.append(chunk(None, use=usage))
        tail = b"data: [DONE]\n\n"
        if reply.kind == "moderation_midstream":  # error event, no [DONE]
            tail = b"data: " + _dumps({"error": {"message": OUTPUT_BLOCKED, "type": _INSPECT,
                                                 "param": None, "code": _INSPECT}}) + b"\n\n"
        self._stream(reply, "text/event-stream", events, tail)

    # ---------------------------------------------------------------- DashScope native (B)
    def _native(self, reply: Reply, body: dict[str, Any], stream: bool, multimodal: bool) -> None:
        rid = str(uuid.uuid4())
        prompt, completion = reply.usage

        def result(content: str, reasoning: str, finish: str | None, out: int) -> dict[str, Any]:
            c: Any = ([{"text": content}] if content else []) if multimodal else content
            msg = {"role": "assistant", "content": c, "reasoning_content": reasoning}
            return {"output": {"choices": [{"finish_reason": finish, "message": msg}]},
                    "usage": {"input_tokens": prompt, "output_tokens": out,
                              "total_tokens": prompt + out},
                    "request_id": rid}

        if not stream:
            finish = None if reply.kind == "no_finish" else reply.finish_reason
            obj = result(reply.text, reply.reasoning, finish, completion)
            self._send_json(200, obj, reply.headers, drop=reply.kind == "drop")
            return

        incremental = bool((body.get("parameters") or {}).get("incremental_output", False))
        size, text = reply.chunk_size, reply.streamed_text()
        steps = [(p, "") for p in _pieces(reply.reasoning, size)]  # (reasoning, content) pieces
        steps += [("", p) for p in _pieces(text, size)] or [("", "")]
        n, share = len(steps), 1.0 if reply.kind in ("ok", "no_finish") else 0.5
        events, reasoning_so_far, content_so_far = [], "", ""
        for i, (r_piece, c_piece) in enumerate(steps, 1):
            reasoning_so_far += r_piece
            content_so_far += c_piece
            finish = reply.finish_reason if reply.kind == "ok" and i == n else "null"
            out = round(completion * share * i / n)  # cumulative usage on every event
            data = (result(c_piece, r_piece, finish, out) if incremental
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
        self.requests: list[Recorded] = []
        self.record = True  # False: keep no request log (long-running benchmark server)
        self.seen = 0  # model requests received (chat/generation POSTs)
        self.in_flight = 0  # of which not answered yet
        self.embedding_dims = 64  # when a request names no ``dimensions``
        self.embedding_status = 0  # non-zero: /embeddings answers this HTTP error
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
            self.default = Reply()
            self.embedding_status = 0

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

    def stats(self) -> dict[str, int]:
        """Model requests seen so far, and how many are still being answered."""
        with self._lock:
            return {"requests": self.seen, "in_flight": self.in_flight}

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
