"""An answer that does not follow the API's format is a clear model-protocol error.

A loopback server streams chunks whose ``content`` is a number (or answers JSON of that
shape); `chatbridge ask` prints one clear line, logs no traceback, and stores the turn as
failed with kind ``protocol``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _chunk(content: object) -> bytes:
    data = {"id": "x", "object": "chat.completion.chunk", "model": "qwen-plus",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    script: ClassVar[list[bytes]] = []
    as_json: ClassVar[bytes | None] = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        if self.as_json is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.as_json)))
            self.end_headers()
            self.wfile.write(self.as_json)
            return
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in self.script:
            self.wfile.write(piece)
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def odd_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"script": [], "as_json": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def _ask(tmp_path: Path, base: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env.update({"CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
                "CHATBRIDGE_MODEL_BASE_URL": base, "CHATBRIDGE_MODEL_API_KEY": "",
                "CHATBRIDGE_MODEL": "qwen-plus", "CHATBRIDGE_LOG_LEVEL": "INFO"})
    return subprocess.run([sys.executable, "-m", "bots.cli", "ask", "hi"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def _errors(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "cb.db") as conn:
        return list(conn.execute("SELECT status, error FROM messages WHERE role = 'assistant'"))


@pytest.mark.parametrize("how", ["stream", "json"])
def test_content_as_a_number(tmp_path: Path, odd_server: tuple[str, type[_Handler]],
                             how: str) -> None:
    base, handler = odd_server
    if how == "stream":
        handler.script = [_chunk(42)]
    else:
        handler.as_json = json.dumps({"choices": [{"message": {"content": 42},
                                                   "finish_reason": "stop"}]}).encode()
    result = _ask(tmp_path, base)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    # The polite sentence, then for the operator where it came from and what was wrong.
    assert last.startswith("chatbridge: The model service sent an answer I couldn't read; "
                           f"please try again later. ({base}/chat/completions: ")
    assert "not in the API's format: TypeError" in last
    [(status, error)] = _errors(tmp_path)
    assert status == "failed" and error.startswith("protocol:")


def test_a_bad_chunk_after_some_text_keeps_the_text(tmp_path: Path,
                                                   odd_server: tuple[str, type[_Handler]]
                                                   ) -> None:
    base, handler = odd_server
    handler.script = [_chunk("Half an "), _chunk({"text": "answer"})]
    result = _ask(tmp_path, base)
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == "Half an"
    [(status, _)] = _errors(tmp_path)
    assert status == "partial"
