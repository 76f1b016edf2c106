"""`chatbridge telegram` as a person runs it: a subprocess against the loopback servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.bots.telegram.conftest import ALICE, TOKEN, TOML, message, update
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply


def _env(tmp_path: Path, api: FakeBotApi, model: FakeModelServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_", "TELEGRAM_"))}
    env.update({
        "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cb.db",
        "CHATBRIDGE_MODEL_BASE_URL": model.openai_base, "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen-plus", "TELEGRAM_BOT_TOKEN": TOKEN,
        "CHATBRIDGE_TELEGRAM_API_URL": api.api_url,
        "CHATBRIDGE_TELEGRAM_FILE_URL": api.file_url,
        "CHATBRIDGE_LOG_LEVEL": "INFO",  # httpx logs every URL at INFO: the token must go
        **extra,
    })
    return env


async def test_polling_bot_answers_and_stops_cleanly(tmp_path: Path, bot_api: FakeBotApi,
                                                     fake_model: FakeModelServer) -> None:
    (tmp_path / "chatbridge.toml").write_text(TOML)
    fake_model.enqueue(Reply(text="Hello from **the** subprocess"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "telegram", cwd=tmp_path,
        env=_env(tmp_path, bot_api, fake_model),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await bot_api.wait_for(lambda: bot_api.calls_to("getUpdates"), within=30)
        bot_api.push(update(message("hi")))
        await bot_api.wait_for(lambda: bot_api.texts(ALICE["id"]), within=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert bot_api.texts(ALICE["id"]) == ["Hello from the subprocess"]
    stderr = err.decode()
    assert "@bridge_bot is running (long polling)" in stderr
    assert "getUpdates" in stderr  # INFO logging was on…
    assert TOKEN not in stderr + out.decode()  # …and the token never showed
    assert "Traceback" not in stderr


async def test_missing_token_is_one_clean_line(tmp_path: Path, bot_api: FakeBotApi,
                                               fake_model: FakeModelServer) -> None:
    env = _env(tmp_path, bot_api, fake_model)
    del env["TELEGRAM_BOT_TOKEN"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "telegram", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_BOT_TOKEN" in lines[0]


async def test_rejected_token_is_a_config_error(tmp_path: Path, bot_api: FakeBotApi,
                                                fake_model: FakeModelServer) -> None:
    wrong = "987654321:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "telegram", cwd=tmp_path,
        env=_env(tmp_path, bot_api, fake_model, TELEGRAM_BOT_TOKEN=wrong),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "refused TELEGRAM_BOT_TOKEN" in err.decode() and wrong not in err.decode()
