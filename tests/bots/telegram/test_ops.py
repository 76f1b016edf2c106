"""The Telegram webhook server's /healthz, /readyz and /metrics (bots.ops) around a turn."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.bots.telegram.conftest import ALICE, message, run_bot, update
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.telegram.test_webhook import post, webhook_settings
from tests.bots.test_ops import sample
from tests.fakes.model_server import FakeModelServer, Reply


async def test_metrics_and_readiness(tmp_path: Path, bot_api: FakeBotApi,
                                     fake_model: FakeModelServer) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    port, settings = webhook_settings(tmp_path, bot_api, fake_model,
                                      f"sqlite+aiosqlite:///{folder}/t.db")
    fake_model.enqueue(Reply(text="Hello Alice!", usage=(11, 7)))
    base = f"http://127.0.0.1:{port}"
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot, \
            httpx.AsyncClient(base_url=base) as client:
        delivery = {"update_id": 700001, **update(message("hello"))}
        assert (await post(port, delivery)).status_code == 200
        assert await bot.answered(ALICE["id"]) == ["Hello Alice!"]

        resp = await client.get("/metrics")
        assert resp.status_code == 200
        text = resp.text
        assert sample(text, "chatbridge_turns_total", platform="telegram", outcome="ok") == 1
        assert sample(text, "chatbridge_tokens_total", platform="telegram",
                      direction="prompt") == 11
        assert sample(text, "chatbridge_tokens_total", platform="telegram",
                      direction="completion") == 7
        assert sample(text, "chatbridge_turn_seconds_count", platform="telegram") == 1
        assert sample(text, "chatbridge_inbox_depth") == 0

        resp = await client.get("/readyz")
        assert resp.status_code == 200 and resp.json() == {"ok": True}

        # The database goes away: its connections closed, its folder deleted.
        bot.runtime.store.close()
        await bot.runtime.store.engine.dispose()
        shutil.rmtree(folder)
        resp = await client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json() == {"ok": False,
                               "error": "database unreachable (OperationalError)"}
        assert str(folder) not in resp.text
        assert (await client.get("/healthz")).status_code == 200
