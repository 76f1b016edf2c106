"""The Telegram path through the inbox: an update is confirmed to Telegram (the polling
offset, the webhook's 200) only once the database holds it, and an answer Telegram
refuses is kept in the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.outbox import run_outbox
from bots.telegram.adapter import GIVEN_UP
from core.outbox import Outbox
from core.store.queue import InboxStore
from tests.bots.telegram.conftest import ALICE, Bot, make_settings, message, run_bot, update
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.telegram.test_webhook import migrated, post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply


@contextlib.asynccontextmanager
async def database_away(bot: Bot) -> AsyncIterator[None]:
    """The inbox's events table is gone for the block: nothing can be recorded. (Not the
    lease table: a chat already seen needs no new lease row, so its events would go in.)"""
    async with bot.runtime.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE inbound_events RENAME TO inbound_events_away"))
    try:
        yield
    finally:
        async with bot.runtime.store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE inbound_events_away RENAME TO inbound_events"))


def offsets(bot: Bot) -> list[int | None]:
    return [c.get("offset") for c in bot.api.calls_to("getUpdates")]


async def test_polling_confirms_an_update_only_once_it_is_recorded(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, db_url: str) -> None:
    await migrated(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.default = Reply(text="ok")
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("warm up"))
        await bot.answered(ALICE["id"])
        async with database_away(bot):
            pushed = bot.send(message("sent while the database is away"))["update_id"]
            # The update is fetched, cannot be recorded, and is asked for again: the offset
            # does not move past it, so Telegram keeps it.
            await bot_api.wait_for(lambda: offsets(bot).count(pushed) >= 3)
            assert max(o or 0 for o in offsets(bot)) == pushed
            assert bot_api.texts(ALICE["id"]) == ["ok"]
        assert await bot.answered(ALICE["id"], 2) == ["ok", "ok"]
        await bot_api.wait_for(lambda: pushed + 1 in offsets(bot))  # confirmed at last
        await bot.idle()
        assert bot.model_texts()[-1] == "sent while the database is away"
        assert len(fake_model.requests) == 2


async def test_webhook_answers_503_until_the_update_is_recorded(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, db_url: str) -> None:
    await migrated(db_url)
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text="yes, here"))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        delivery = {"update_id": 42, **update(message("are you there?"))}
        async with database_away(bot):
            response = await post(port, delivery)
            assert response.status_code == 503  # Telegram delivers it again
            assert response.json() == {"ok": False, "error": "temporarily unavailable"}
        assert (await post(port, delivery)).status_code == 200
        assert await bot.answered(ALICE["id"]) == ["yes, here"]
        await bot.idle()
        assert len(fake_model.requests) == 1


async def test_update_is_recorded_before_it_is_confirmed(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text="later", delay=1.0))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        assert (await post(port, {"update_id": 7, **update(message("remember me"))})) \
            .status_code == 200
        async with bot.runtime.store.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT status, scope_key, payload FROM inbound_events"))).one()
        assert row.status in ("received", "processing")
        assert row.scope_key == f"7000001/{ALICE['id']}"
        assert "remember me" in row.payload
        await bot.idle()


async def test_an_answer_telegram_refuses_is_kept_and_retried(
        bot: Bot, capsys: pytest.CaptureFixture[str]) -> None:
    bot.api.fail("sendMessage", 400, "Bad Request: something went wrong")
    bot.model.enqueue(Reply(text="an answer worth **keeping**"))
    bot.send(message("hello"))
    await bot.api.wait_for(lambda: bot.api.calls_to("sendMessage"))
    await bot.idle()
    assert bot.api.texts(ALICE["id"]) == []
    kept = await Outbox(bot.runtime.store).pending()
    assert [(k.platform, k.text) for k in kept] == [("telegram", "an answer worth **keeping**")]
    assert kept[0].target["chat_id"] == ALICE["id"]
    assert await run_outbox(bot.runtime.settings, action="retry", platform="telegram") == 0
    assert bot.api.texts(ALICE["id"]) == ["an answer worth keeping"]
    assert bot.api.calls_to("sendMessage")[-1].get("parse_mode") == "HTML"
    assert await Outbox(bot.runtime.store).pending() == []
    assert "sent 1" in capsys.readouterr().out


async def test_polling_goes_on_after_a_conflict_or_a_server_error(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    conflict = ("Conflict: terminated by other getUpdates request; make sure that only one "
                "bot instance is running")
    bot.api.fail("getUpdates", 409, conflict)
    bot.api.fail("getUpdates", 502, "Bad Gateway")
    bot.model.enqueue(Reply(text="still polling"))
    with caplog.at_level(logging.WARNING, logger="bots.telegram.polling"):
        bot.send(message("anyone there?"))
        assert await bot.answered(ALICE["id"]) == ["still polling"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Another process is polling this bot" in errors[0].getMessage()
    assert any("Bad Gateway" in r.getMessage() for r in caplog.records)


async def test_message_given_up_after_too_many_attempts_is_explained(bot: Bot) -> None:
    queue = InboxStore(bot.runtime.store)
    payload = {"update_id": 4242, **update(message("this one kills workers"))}
    # As if five workers had died on it: not due for a moment, so no claim sees it earlier.
    assert await queue.enqueue(platform="telegram", event_id="poison", scope="poison-chat",
                               payload=payload, delay=0.3)
    async with bot.runtime.store.engine.begin() as conn:
        await conn.execute(text("UPDATE inbound_events SET attempts = 5"))
    await asyncio.sleep(0.4)
    bot.runtime.inbox._wake.set()
    await bot.idle()
    assert await bot.answered(ALICE["id"]) == [GIVEN_UP]
    assert bot.model.requests == []
