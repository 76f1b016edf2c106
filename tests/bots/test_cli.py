"""`chatbridge` as a person runs it: subprocesses against the loopback model server."""

from __future__ import annotations

import argparse
import contextlib
import getpass
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


class Terminal:
    """``chatbridge chat`` on a pseudo-terminal, as a person runs it."""

    def __init__(self, tmp_path: Path, fake: FakeModelServer) -> None:
        import pty

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
        env.update({"CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/t.db",
                    "CHATBRIDGE_MODEL_BASE_URL": fake.openai_base,
                    "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus"})
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "chat"], cwd=tmp_path,
                                     env=env, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.screen = b""

    def read_until(self, marker: bytes, count: int = 1) -> None:
        import select
        import time

        deadline = time.monotonic() + 30
        while self.screen.count(marker) < count and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                self.screen += os.read(self.master, 4096)
        assert self.screen.count(marker) >= count, self.screen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def ctrl_c(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGINT)

    def finish(self) -> int:
        import select

        code = self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            while select.select([self.master], [], [], 0.2)[0]:
                data = os.read(self.master, 4096)
                if not data:
                    break
                self.screen += data
        os.close(self.master)
        assert b"Traceback" not in self.screen
        return code


def test_chat_in_a_terminal_streams_and_ctrl_c_leaves_at_once(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    fake_model.enqueue(Reply(text="Hi, I am streaming."))
    term = Terminal(tmp_path, fake_model)
    term.read_until(b"you> ")
    assert f"memory {tmp_path}/t.db".encode() in term.screen  # where the memory is
    term.type("hello")
    term.read_until(b"you> ", 2)
    assert b"bot> Hi, I am streaming." in term.screen
    term.ctrl_c()  # Ctrl-C at the prompt
    assert term.finish() == 130
    assert term.screen.endswith(b"you> \r\n")  # the shell's prompt gets a line of its own


def test_chat_ctrl_c_stops_the_answer_keeps_it_and_a_second_one_leaves(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    import sqlite3
    import time

    story = "Once upon a time " + "there was a very long story, " * 40
    fake_model.enqueue(Reply(text=story, chunk_size=4, chunk_delay=0.05),
                       Reply(text=story, chunk_size=4, chunk_delay=0.05))
    term = Terminal(tmp_path, fake_model)
    term.read_until(b"you> ")
    term.type("Tell me a story.")
    term.read_until(b"Once upon")
    term.ctrl_c()  # stops the answer, back at the prompt
    term.read_until(b"(stopped")
    term.read_until(b"you> ", 2)
    assert term.proc.poll() is None  # still chatting
    with sqlite3.connect(tmp_path / "t.db") as db:
        status, text = db.execute("SELECT status, text FROM messages WHERE role = 'assistant'"
                                  ).fetchone()
    assert status == "partial" and text.startswith("Once upon") and len(text) < len(story)
    term.type("Another one.")
    term.read_until(b"Once upon", 2)
    term.ctrl_c()
    time.sleep(0.1)  # two signals sent at once may arrive as one
    term.ctrl_c()  # a second Ctrl-C leaves
    assert term.finish() == 130
    assert term.screen.endswith(b"\r\n")


def test_chat_commands_that_are_wrong_get_a_hint_and_reach_no_model(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    fake_model.enqueue(Reply(text="answered"))
    result = run(tmp_path, fake_model, "chat",
                 stdin="/foo\n/reset now\n/image\n/image notes.txt\n//etc is a path\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Unknown command /foo" in out and "/reset takes nothing after it" in out
    assert "/image needs a file" in out
    assert "not attached" in result.stderr
    assert len(fake_model.requests) == 1
    sent = fake_model.requests[0].json["messages"][-1]["content"]
    assert sent == "/etc is a path"  # plain text: the image was refused when attached


def test_usage_table(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="a", usage=(10, 2)), Reply(text="b", usage=(20, 3)),
                       Reply(kind="error", status=401), Reply(text="c", report_usage=False))
    run(tmp_path, fake_model, "ask", "--conversation", "one", "hi")
    run(tmp_path, fake_model, "ask", "--conversation", "two", "hi")
    run(tmp_path, fake_model, "ask", "--conversation", "two", "again")
    run(tmp_path, fake_model, "ask", "--conversation", "three", "hi")  # no usage reported
    env = {"CHATBRIDGE_MODEL_BASE_URL": "https://example.invalid/v1"}  # no key needed here
    (tmp_path / "chatbridge.toml").write_text(
        '[prices.qwen-plus]\ninput = 1000\ncached_input = 100\noutput = 10000\n')
    by_conv = run(tmp_path, fake_model, "usage", "--by", "conversation", **env)
    assert by_conv.returncode == 0, by_conv.stderr
    lines = by_conv.stdout.splitlines()
    assert lines[1].split() == ["conversation", "turns", "failed", "prompt", "tokens",
                                "completion", "tokens", "total", "tokens", "estimated",
                                "tool", "calls", "cached", "tokens", "cache", "writes", "cost"]
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert rows["console:console/two"][1:8] == ["2", "1", "20", "3", "23", "0", "0"]
    assert rows["console:console/two"][8:] == ["0", "0", "0.050000"]  # 20 x 1000 + 3 x 10000
    three = rows["console:console/three"]
    assert three[1:3] == ["1", "0"] and int(three[3]) > 0 and three[6] == "1"
    total = lines[-2].split()
    assert total[:3] == ["total", "4", "1"] and total[6] == "1" and total[7] == "0"
    assert lines[-1].startswith("estimated: the tokens of 1 turn(s) are chatbridge's own")
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


def test_unreachable_platform_api_exits_1_for_slack_and_telegram(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    slack = run(tmp_path, fake_model, "slack", "--port", "0",
                SLACK_BOT_TOKEN="xoxb-1-2-secret", SLACK_SIGNING_SECRET="s3cr3t",
                CHATBRIDGE_SLACK_API_URL="http://127.0.0.1:9/api/")
    telegram = run(tmp_path, fake_model, "telegram",
                   TELEGRAM_BOT_TOKEN="123456:AAHsecretsecretsecretsecret",
                   CHATBRIDGE_TELEGRAM_API_URL="http://127.0.0.1:9/bot")
    for result, secret in ((slack, "xoxb-1-2-secret"), (telegram, "AAHsecret")):
        assert result.returncode == 1, result.stderr
        line = one_clean_line(result.stderr)
        assert "http://127.0.0.1:9/" in line and secret not in line


def test_unreachable_model_names_the_url_and_the_cause(tmp_path: Path,
                                                       fake_model: FakeModelServer) -> None:
    dead = {"CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "CHATBRIDGE_RETRY_SECONDS": "0"}
    cause = "http://127.0.0.1:9/v1/chat/completions: could not reach the model endpoint: " \
        "connection refused"
    asked = run(tmp_path, fake_model, "ask", "hi", **dead)
    assert asked.returncode == 1
    line = one_clean_line(asked.stderr)
    assert line.startswith("chatbridge: The model service is unavailable") and cause in line
    as_json = run(tmp_path, fake_model, "ask", "--json", "hi", **dead)
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["kind"] == "unavailable" and "unavailable" in data["error"]
    assert cause in data["detail"] and data["conversation"] == "default"
    checked = run(tmp_path, fake_model, "check", **dead)
    assert checked.returncode == 1
    assert f"FAIL  model: The model service is unavailable right now; please try again " \
        f"later. ({cause}" in checked.stdout
    database = next(x for x in checked.stdout.splitlines() if x.startswith("ok    database"))
    assert f"{tmp_path}/cb.db" in database  # which database is in use
    bad_config = run(tmp_path, fake_model, "ask", "--json", "hi", CHATBRIDGE_STREAM="maybe")
    assert bad_config.returncode == 2 and "CHATBRIDGE_STREAM" in json.loads(
        bad_config.stdout)["error"]


def test_a_users_mistake_is_no_internal_error(tmp_path: Path,
                                             fake_model: FakeModelServer) -> None:
    upgraded = run(tmp_path, fake_model, "db", "upgrade", "9999")
    assert upgraded.returncode == 2
    line = one_clean_line(upgraded.stderr)
    assert "internal error" not in line and "'9999'" in line
    missing = run(tmp_path, fake_model, "ask", "--image", "nope.png", "hi")
    assert missing.returncode == 2 and "cannot read image" in one_clean_line(missing.stderr)
    empty = run(tmp_path, fake_model, "ask", "  ")
    assert empty.returncode == 2 and "empty" in one_clean_line(empty.stderr)


def test_default_database_is_in_the_data_dir_whatever_the_folder(
    tmp_path: Path, fake_model: FakeModelServer
) -> None:
    fake_model.enqueue(Reply(text="Hello, Ann."), Reply(text="You are Ann."))
    data = tmp_path / "data"
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    env = {"CHATBRIDGE_DATABASE_URL": "", "XDG_DATA_HOME": str(data)}
    run(tmp_path / "one", fake_model, "ask", "I am Ann.", **env)
    run(tmp_path / "two", fake_model, "ask", "Who am I?", **env)
    assert (data / "chatbridge" / "chatbridge.db").is_file()
    sent = [m["content"] for m in fake_model.requests[-1].json["messages"]][1:]
    assert sent == ["I am Ann.", "Hello, Ann.", "Who am I?"]  # one memory from any folder


def test_help_describes_options_and_defaults() -> None:
    from bots.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    ask = sub.choices["ask"].format_help()
    assert "repeat" in ask and "(default: default)" in ask
    assert "(default: 3000)" in sub.choices["slack"].format_help()
    assert "(default: 8443)" in sub.choices["telegram"].format_help()
    assert "(default: 8080)" in sub.choices["local-model"].format_help()
    assert "Exit codes" in parser.format_help()


def test_chat_summary_and_compact(tmp_path: Path, fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="noted"), Reply(text="it is 9"))
    result = run(tmp_path, fake_model, "chat", "--conversation", "m",
                 stdin="/summary\nFACT: the answer is 9\n/compact\n/summary\n/compact x\n"
                 "what is the answer?\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "No summary yet" in out and "Compacted" in out
    assert "FACT: the answer is 9" in out and "/compact takes nothing after it" in out
    last = fake_model.requests[-1].json["messages"]
    assert [m["role"] for m in last] == ["system", "user"]
    assert "FACT: the answer is 9" in last[0]["content"]


def test_prompt_cache_tokens_and_cost_in_usage(tmp_path: Path,
                                                fake_model: FakeModelServer) -> None:
    prompt = "You answer questions about the handbook. " + "Rule: be kind. " * 400
    (tmp_path / "chatbridge.toml").write_text(
        '[prices.qwen-plus]\ninput = 1000\ncached_input = 100\noutput = 10000\n'
        '[prices."qwen-max"]\ninput = 1\noutput = 1\n')
    for text in ("first question", "second question"):
        result = run(tmp_path, fake_model, "ask", "--conversation", "c", "--json", text,
                     CHATBRIDGE_SYSTEM_PROMPT=prompt)
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["cached_tokens"] > 1024
    second = fake_model.requests[-1].json
    system = second["messages"][0]["content"]
    assert system[-1]["cache_control"] == {"type": "ephemeral"}  # the stable prefix
    assert second["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    out = run(tmp_path, fake_model, "usage", "--by", "model",
              CHATBRIDGE_MODEL_BASE_URL="https://example.invalid/v1").stdout.splitlines()
    row = next(line.split() for line in out if line.startswith("qwen-plus"))
    prompt_tokens, cached, created = int(row[3]), int(row[8]), int(row[9])  # [7]: tool calls
    assert cached > 1024 and created > 1024  # written by the first turn, read by the second
    plain = prompt_tokens - cached - created
    expected = (plain * 1000 + cached * 100 + created * 1250 + int(row[4]) * 10000) / 1e6
    assert row[10] == f"{expected:.6f}"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "chatbridge.toml").write_text('[prices.qwen-plus]\ninput = "cheap"\noutput = 1\n')
    failed = run(bad, fake_model, "usage")
    assert failed.returncode == 2 and "[prices.qwen-plus]: input" in one_clean_line(
        failed.stderr)


def test_prune_and_forget_commands(tmp_path: Path, fake_model: FakeModelServer) -> None:
    run(tmp_path, fake_model, "ask", "--conversation", "p", "hello there")
    offline = {"CHATBRIDGE_MODEL_BASE_URL": "https://example.invalid/v1"}
    dry = run(tmp_path, fake_model, "prune", "--older-than", "0d", "--dry-run", **offline)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 2 messages" in dry.stdout
    user = getpass.getuser()
    gone = run(tmp_path, fake_model, "forget", "--user", f"console:{user}", **offline)
    assert gone.returncode == 0, gone.stderr
    assert "deleted 2 messages" in gone.stdout and "deleted 0 feedback" in gone.stdout
    pruned = run(tmp_path, fake_model, "prune", "--older-than", "0d", **offline)
    assert "deleted 0 messages" in pruned.stdout and "inbound events" in pruned.stdout
    bad = run(tmp_path, fake_model, "forget", "--user", "irc:bob", **offline)
    assert bad.returncode == 2 and "PLATFORM:ID" in one_clean_line(bad.stderr)
    bad = run(tmp_path, fake_model, "prune", "--older-than", "ninety", **offline)
    assert bad.returncode == 2 and "--older-than" in one_clean_line(bad.stderr)
