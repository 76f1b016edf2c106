"""`chatbridge export` and `chatbridge handoffs` as a person runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bots.db import create_engine, open_store
from core.handoff import Handoffs
from tests.bots.test_cli import one_clean_line, run
from tests.fakes.model_server import FakeModelServer, Reply


def test_export_markdown_and_jsonl_with_tool_calls(tmp_path: Path,
                                                   fake_model: FakeModelServer) -> None:
    fake_model.enqueue(Reply(text="", tool_calls=[("current_time", "{}")]),
                       Reply(text="It is noon."), Reply(text="Bye!"))
    toml = '[defaults]\ntools = ["current_time"]\n'
    (tmp_path / "chatbridge.toml").write_text(toml)
    assert run(tmp_path, fake_model, "ask", "--conversation", "shop", "what time is it?"
               ).returncode == 0
    assert run(tmp_path, fake_model, "ask", "--conversation", "shop", "bye").returncode == 0
    md = run(tmp_path, fake_model, "export", "--scope", "console/shop")
    assert md.returncode == 0, md.stderr
    assert "# Conversation 1 (console console/shop)" in md.stdout
    assert "what time is it?" in md.stdout and "It is noon." in md.stdout
    assert "> tool `current_time` {} → ok" in md.stdout and "(bot)" in md.stdout
    jl = run(tmp_path, fake_model, "export", "--conversation", "1", "--format", "jsonl")
    rows = [json.loads(line) for line in jl.stdout.splitlines()]
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[0]["tools"][0]["name"] == "current_time" and rows[0]["at"].endswith("+00:00")
    none = run(tmp_path, fake_model, "export", "--user", "slack:U404")
    assert none.returncode == 1 and "no conversation matched" in none.stdout
    bad = run(tmp_path, fake_model, "export", "--user", "U404")
    assert bad.returncode == 2 and "PLATFORM:ID" in one_clean_line(bad.stderr)


def test_handoffs_lists_open_ones_with_age(tmp_path: Path,
                                           fake_model: FakeModelServer) -> None:
    assert run(tmp_path, fake_model, "db", "upgrade").returncode == 0

    async def open_one() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/cb.db")
        store = open_store(engine)
        try:
            await Handoffs(store).start(platform="telegram", scope="9/111", reason="refund",
                                        staff="slack:C0STAFF")
        finally:
            store.close()
            await engine.dispose()

    asyncio.run(open_one())
    out = run(tmp_path, fake_model, "handoffs")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1 open handoff"
    assert lines[2].split()[1:] == ["0m", "0m", "telegram:9/111", "slack:C0STAFF", "refund"]
