"""`chatbridge` as a person runs it: subprocesses against the loopback model server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

from bots.db import HEAD
from tests.fakes.model_server import FakeModelServer, Reply

SECRET = "sk-live-0123456789abcdef"


def run(tmp_path: Path, fake: FakeModelServer, *args: str, stdin: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    full.update({
        "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CHATBRIDGE_MODEL_BASE_URL": fake.openai_base,
        "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen-plus",
        "CHATBRIDGE_RETRY_SECONDS": "1",
    })
    full.update(env)
    return subprocess.run([sys.executable, "-m", "bots.cli", *args], cwd=tmp_path, env=full,
                          input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_ask_prints_reply_and_remembers_across_processes(tmp_path: Path,
                                                         fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="Nice to meet you, Ann."), Reply(text="Your name is Ann."))
    first = run(tmp_path, fake_model, "ask", "--conversation", "me", "My name is Ann.")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Nice to meet you, Ann."
    second = run(tmp_path, fake_model, "ask", "--conversation", "me", "What is my name?")
    assert second.stdout.strip() == "Your name is Ann."
    sent = [m["content"] for m in fake_model.requests[-1].json["messages"]][1:]
    assert sent == ["My name is Ann.", "Nice to meet you, Ann.", "What is my name?"]


def test_ask_json(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="42", usage=(12, 1)))
    result = run(tmp_path, fake_model, "ask", "--json", "answer?")
    data = json.loads(result.stdout)
    assert data["reply"] == "42" and data["conversation"] == "default"
    assert data["model"] == "qwen-plus"
    assert data["usage"] == {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13,
                             "cached_tokens": 0, "reasoning_tokens": 0}


def test_ask_with_image(tmp_path: Path, fake_model: FakeModelServer) -> None:
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48), "blue").save(buf, "PNG")
    (tmp_path / "blue.dat").write_bytes(buf.getvalue())  # type comes from bytes, not name
    result = run(tmp_path, fake_model, "ask", "--image", "blue.dat", "what colour?")
    assert result.returncode == 0, result.stderr
    content = fake_model.requests[-1].json["messages"][-1]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(("setup", "expect"), [
    ("corrupt", "image"), ("missing", "cannot read image"),
])
def test_ask_bad_image(tmp_path: Path, fake_model: FakeModelServer, setup: str,
                       expect: str) -> None:
    if setup == "corrupt":
        (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = run(tmp_path, fake_model, "ask", "--image", "x.png", "what is it?")
    assert result.returncode != 0
    assert expect in one_clean_line(result.stderr).lower()
    assert fake_model.requests == []


def test_ask_model_auth_failure_is_one_line_without_secret(tmp_path: Path,
                                                           fake_model: FakeModelServer) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {SECRET}",
                      "code": "invalid_api_key"}}
    fake_model.enqueue(Reply(kind="error", status=401, body=body))
    result = run(tmp_path, fake_model, "ask", "hi", CHATBRIDGE_MODEL_API_KEY=SECRET)
    assert result.returncode == 1
    line = one_clean_line(result.stderr)
    assert "API key" in line and SECRET not in result.stderr + result.stdout


def test_ask_outage_after_retries(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(*[Reply(kind="error", status=503) for _ in range(6)])
    result = run(tmp_path, fake_model, "ask", "hi")
    assert result.returncode == 1
    assert "unavailable" in one_clean_line(result.stderr)


def test_ask_refusal(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(kind="moderation_midstream", text="x" * 30))
    result = run(tmp_path, fake_model, "ask", "bad request")
    assert result.returncode == 1
    assert one_clean_line(result.stderr).startswith("chatbridge: Sorry")


def test_missing_key_for_remote_endpoint_names_the_setting(tmp_path: Path,
                                                           fake_model: FakeModelServer) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env["CHATBRIDGE_MODEL_BASE_URL"] = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    result = subprocess.run([sys.executable, "-m", "bots.cli", "ask", "hi"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "CHATBRIDGE_MODEL_API_KEY" in one_clean_line(result.stderr)


def test_dashscope_native_api(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="native hello"))
    result = run(tmp_path, fake_model, "ask", "hi", CHATBRIDGE_MODEL_API="dashscope",
                 CHATBRIDGE_MODEL_BASE_URL=fake_model.dashscope_base)
    assert result.stdout.strip() == "native hello"
    assert fake_model.requests[-1].path.endswith("/text-generation/generation")


def test_bad_preset_is_a_startup_error(tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "chatbridge.toml").write_text('[profiles.x]\ntemperature = 2.5\n')
    result = run(tmp_path, fake_model, "ask", "hi")
    assert result.returncode == 2
    assert "temperature" in one_clean_line(result.stderr)
    assert fake_model.requests == []


def test_chat_reads_lines_when_not_a_terminal(tmp_path: Path,
                                              fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="one"), Reply(text="two"), Reply(text="three"))
    result = run(tmp_path, fake_model, "chat", "--conversation", "s",
                 stdin="first\nsecond\n/reset\nthird\n")
    assert result.returncode == 0, result.stderr
    assert [x for x in result.stdout.splitlines() if x in ("one", "two", "three")] == \
        ["one", "two", "three"]
    after_reset = [m["content"] for m in fake_model.requests[-1].json["messages"]][1:]
    assert after_reset == ["third"]


def test_db_commands(tmp_path: Path, fake_model: FakeModelServer) -> None:
    assert run(tmp_path, fake_model, "db", "current").stdout.strip().startswith("none")
    assert run(tmp_path, fake_model, "db", "upgrade").stdout.strip() == HEAD
    assert run(tmp_path, fake_model, "db", "downgrade", "base").stdout.strip().startswith("none")


def test_db_upgrade_on_postgres(tmp_path: Path, fake_model: FakeModelServer,
                                postgres_url: str) -> None:
    up = run(tmp_path, fake_model, "db", "upgrade", CHATBRIDGE_DATABASE_URL=postgres_url)
    assert up.returncode == 0 and up.stdout.strip() == HEAD, up.stderr
    fake_model.enqueue(Reply(text="from postgres"))
    asked = run(tmp_path, fake_model, "ask", "hi", CHATBRIDGE_DATABASE_URL=postgres_url)
    assert asked.stdout.strip() == "from postgres", asked.stderr


def test_parallel_first_use_of_a_new_sqlite_file(tmp_path: Path,
                                                 fake_model: FakeModelServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env.update({"CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/new.db",
                "CHATBRIDGE_MODEL_BASE_URL": fake_model.openai_base,
                "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus"})
    procs = [subprocess.Popen([sys.executable, "-m", "bots.cli", "ask", "--conversation",
                               f"c{i}", "hi"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


def test_unreachable_database_is_one_line(tmp_path: Path, fake_model: FakeModelServer) -> None:
    url = "postgresql+asyncpg://chatbridge:hunter2@127.0.0.1:9/chatbridge"
    for args in (("db", "current"), ("ask", "hi")):
        result = run(tmp_path, fake_model, *args, CHATBRIDGE_DATABASE_URL=url)
        assert result.returncode == 1
        line = one_clean_line(result.stderr)
        assert "Cannot" in line and "hunter2" not in line


def test_chat_in_a_terminal_streams_and_ctrl_c_leaves_at_once(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    import contextlib
    import pty
    import select
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env.update({"CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
                "CHATBRIDGE_MODEL_BASE_URL": fake_model.openai_base,
                "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus"})
    fake_model.enqueue(Reply(text="Hi, I am streaming."))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "chat"], cwd=tmp_path, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = b""

    def read_until(marker: bytes, count: int = 1) -> None:
        nonlocal screen
        deadline = time.monotonic() + 30
        while screen.count(marker) < count and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                screen += os.read(master, 4096)
        assert screen.count(marker) >= count, screen

    read_until(b"you> ")
    os.write(master, b"hello\n")
    read_until(b"you> ", 2)
    assert b"bot> Hi, I am streaming." in screen
    proc.send_signal(signal.SIGINT)  # Ctrl-C at the prompt
    assert proc.wait(timeout=5) == 130
    with contextlib.suppress(OSError):
        while select.select([master], [], [], 0.2)[0]:
            screen += os.read(master, 4096)
    assert b"Traceback" not in screen
    os.close(master)


def test_usage_table(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="a", usage=(10, 2)), Reply(text="b", usage=(20, 3)),
                       Reply(kind="error", status=401))
    run(tmp_path, fake_model, "ask", "--conversation", "one", "hi")
    run(tmp_path, fake_model, "ask", "--conversation", "two", "hi")
    run(tmp_path, fake_model, "ask", "--conversation", "two", "again")
    env = {"CHATBRIDGE_MODEL_BASE_URL": "https://example.invalid/v1"}  # no key needed here
    by_conv = run(tmp_path, fake_model, "usage", "--by", "conversation", **env)
    assert by_conv.returncode == 0, by_conv.stderr
    lines = by_conv.stdout.splitlines()
    assert lines[1].split() == ["conversation", "turns", "failed", "prompt", "tokens",
                                "completion", "tokens", "total", "tokens", "tool", "calls"]
    assert lines[2].split()[:6] == ["console:console/two", "2", "1", "20", "3", "23"]
    assert lines[-1].split() == ["total", "3", "1", "30", "5", "35", "0"]
    by_model = run(tmp_path, fake_model, "usage", "--by", "model", "--since", "1h")
    assert "qwen-plus" in by_model.stdout
    bad = run(tmp_path, fake_model, "usage", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in one_clean_line(bad.stderr)


def test_check_reports_each_part(tmp_path: Path, fake_model: FakeModelServer) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Platforms(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path == "/slack/auth.test":
                ok = self.headers.get("Authorization") == "Bearer xoxb-good"
                body = {"ok": ok, "team": "Acme", "user": "chatbridge"} if ok else \
                    {"ok": False, "error": "invalid_auth"}
            else:
                body = {"ok": True, "result": {"id": 1, "is_bot": True, "username": "cb_bot"}}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Platforms)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"CHATBRIDGE_SLACK_API_URL": f"{base}/slack/", "SLACK_BOT_TOKEN": "xoxb-good",
           "CHATBRIDGE_TELEGRAM_API_URL": f"{base}/tg/bot", "TELEGRAM_BOT_TOKEN": "12:SECRET"}
    try:
        good = run(tmp_path, fake_model, "check", **env)
        assert good.returncode == 0, good.stdout + good.stderr
        assert [line.split()[0] for line in good.stdout.splitlines()] == ["ok"] * 5
        assert "Acme" in good.stdout and "@cb_bot" in good.stdout
        fake_model.enqueue(Reply(kind="error", status=401))
        bad = run(tmp_path, fake_model, "check", **{**env, "SLACK_BOT_TOKEN": "xoxb-bad"})
        assert bad.returncode == 1
        assert "FAIL  model: The model API key or access is wrong" in bad.stdout
        assert "FAIL  slack: Slack refused the bot token" in bad.stdout
        assert "SECRET" not in bad.stdout + good.stdout
    finally:
        server.shutdown()


def test_outbox_list_and_retry_on_an_empty_outbox(tmp_path: Path,
                                                  fake_model: FakeModelServer) -> None:
    listed = run(tmp_path, fake_model, "outbox", "list")
    assert listed.returncode == 0 and listed.stdout.strip() == "0 pending replies", listed.stderr
    retried = run(tmp_path, fake_model, "outbox", "retry")
    assert retried.returncode == 0 and "sent 0" in retried.stdout, retried.stderr
