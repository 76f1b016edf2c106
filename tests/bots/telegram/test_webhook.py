"""Webhook mode: the secret token, malformed bodies, and a redelivered update answered once."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bots.db import create_engine, upgrade
from bots.settings import Settings
from tests.bots.telegram.conftest import ALICE, TOML, make_settings, message, run_bot, update
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

SECRET = "s3cret_Token-42"
WEBHOOK_URL = "https://bot.example.com/telegram/webhook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_settings(tmp_path: Path, api: FakeBotApi, model: FakeModelServer,
                     db_url: str, toml: str = TOML) -> tuple[int, Settings]:
    """A free port and settings for the bot in webhook mode."""
    settings = make_settings(tmp_path, api, model, db_url, toml,
                             TELEGRAM_WEBHOOK_URL=WEBHOOK_URL, TELEGRAM_WEBHOOK_SECRET=SECRET)
    return free_port(), settings


async def post(port: int, body: Any, secret: str | None = SECRET) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(f"http://127.0.0.1:{port}/telegram/webhook", content=data,
                                 headers=headers)


async def migrated(db_url: str) -> None:
    """PostgreSQL is migrated explicitly (`chatbridge db upgrade`); SQLite migrates itself."""
    if db_url.startswith("sqlite"):
        return
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def test_duplicate_update_over_webhook_is_answered_once(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, db_url: str) -> None:
    await migrated(db_url)
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text="answered once"), Reply(text="answered twice?!"))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        assert bot_api.webhook == {"url": "https://bot.example.com/telegram/webhook",
                                   "secret_token": SECRET,
                                   "allowed_updates": [
                                       "message", "business_message",
                                       "edited_business_message",
                                       "deleted_business_messages", "business_connection",
                                       "message_reaction", "stopped_message_generation",
                                       "callback_query"]}
        assert not bot_api.calls_to("getUpdates") and not bot_api.calls_to("deleteWebhook")
        delivery = {"update_id": 900001, **update(message("hello once"))}
        assert (await post(port, delivery)).status_code == 200
        assert await bot.answered(ALICE["id"]) == ["answered once"]
        # Telegram redelivers (same update) and a replica sees it under a new update_id.
        assert (await post(port, delivery)).status_code == 200
        assert (await post(port, {**delivery, "update_id": 900002})).status_code == 200
        # A second message delivered twice at the same moment (two replicas at once).
        again = {"update_id": 900003, **update(message("hello twice"))}
        statuses = await asyncio.gather(post(port, again), post(port, again))
        assert [r.status_code for r in statuses] == [200, 200]
        await bot.idle()
        await bot.settle(0.5)
        assert bot_api.texts(ALICE["id"]) == ["answered once", "answered twice?!"]
        assert len(fake_model.requests) == 2
        assert bot.model_texts() == ["hello once", "answered once", "hello twice"]
        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200


async def test_wrong_or_missing_secret_is_403_and_bad_bodies_are_400(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url)
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        good = {"update_id": 1, **update(message("hi"))}
        assert (await post(port, good, secret="wrong")).status_code == 403
        assert (await post(port, good, secret=None)).status_code == 403
        assert (await post(port, b"{not json")).status_code == 400
        assert (await post(port, [1, 2])).status_code == 400
        assert (await post(port, {"no": "update_id"})).status_code == 400
        await bot.settle(0.5)
        assert fake_model.requests == [] and not bot_api.calls_to("sendMessage")


async def test_webhook_needs_url_and_secret(tmp_path: Path, bot_api: FakeBotApi,
                                            fake_model: FakeModelServer,
                                            sqlite_url: str) -> None:
    from bots.telegram import load_config
    from core.errors import ConfigError

    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_URL"):
        load_config(settings, webhook=True)
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url,
                             TELEGRAM_WEBHOOK_URL="https://x.example/telegram/webhook")
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        load_config(settings, webhook=True)


