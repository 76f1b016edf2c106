"""Effects without a turn happen once per message; a stored answer is never taken back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import StoreError
from tests.bots.telegram.conftest import (
    ALICE,
    GROUP,
    Bot,
    message,
    run_bot,
    update,
)
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.bots.telegram.test_webhook import post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply

VOICE = {"file_id": "v", "file_unique_id": "v", "duration": 3}


async def test_a_redelivered_reset_or_voice_message_has_one_effect(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.default = Reply(text="ok")
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        await post(port, {"update_id": 1, **update(message("old topic"))})
        await bot.answered(chat)
        reset: dict[str, Any] = {"update_id": 2, **update(message("/reset"))}
        await post(port, reset)
        assert "new conversation" in (await bot.answered(chat, 2))[1]
        await post(port, {"update_id": 3, **update(message("new topic"))})
        await bot.answered(chat, 3)
        # The same /reset again: Telegram's redelivery, and a replica's copy.
        await post(port, reset)
        await post(port, {**reset, "update_id": 4})
        await bot.settle(0.8)
        assert len(bot_api.texts(chat)) == 3  # no second "Started a new conversation"
        await post(port, {"update_id": 5, **update(message("still there?"))})
        await bot.answered(chat, 4)
        assert bot.model_texts() == ["new topic", "ok", "still there?"]  # not closed again

        voice = {"update_id": 6, **update(message(voice=VOICE))}
        await post(port, voice)
        assert "voice messages" in (await bot.answered(chat, 5))[4]
        await post(port, voice)
        await post(port, {**voice, "update_id": 7})
        await bot.settle(0.8)
        assert len(bot_api.texts(chat)) == 5  # one note


async def test_a_redelivered_command_in_polling_is_answered_once(bot: Bot) -> None:
    start = message("/start")
    bot.send(start)
    bot.send(start)  # a second update carrying the same message
    await bot.answered(ALICE["id"])
    await bot.settle(0.6)
    assert len(bot.api.texts(ALICE["id"])) == 1


async def test_a_bare_mention_gets_a_prompt_once(bot: Bot) -> None:
    handle = "@" + str(BOT_USER["username"])
    only = message(handle, chat=GROUP,
                   entities=[{"type": "mention", "offset": 0, "length": len(handle)}])
    bot.send(only)
    bot.send(only)  # redelivered
    assert await bot.answered(GROUP["id"]) == ["Yes? Ask me something after the mention."]
    await bot.settle(0.6)
    assert len(bot.api.texts(GROUP["id"])) == 1
    assert bot.model.requests == []
    assert bot.api.calls_to("sendMessage")[0].get("reply_parameters")["message_id"] == \
        only["message_id"]


async def test_failing_to_record_the_reply_keeps_the_answer(
        bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(**kwargs: Any) -> bool:
        raise StoreError("database is locked")

    monkeypatch.setattr(bot.runtime.store, "record_reply_ref", broken)
    bot.model.enqueue(Reply(text="the answer"))
    bot.send(message("hi"))
    assert await bot.answered(ALICE["id"]) == ["the answer"]
    await bot.settle(0.5)
    assert bot.api.texts(ALICE["id"]) == ["the answer"]  # no apology replaced or followed it
    assert len(bot.api.calls_to("sendMessage")) == 1
