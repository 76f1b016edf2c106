"""``[telegram.allow]``: the decision itself, its settings, and the bot keeping others out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.settings import load_settings
from bots.telegram import load_config
from bots.telegram.config import DENIED, TelegramAllow
from core.errors import ConfigError
from tests.bots.telegram.conftest import (
    ALICE,
    BOB,
    FORUM,
    GROUP,
    TOKEN,
    TOML,
    Bot,
    make_settings,
    mention,
    message,
    run_bot,
)
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

BASE = {"CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "CHATBRIDGE_MODEL_API_KEY": "",
        "TELEGRAM_BOT_TOKEN": TOKEN}


# ---------------------------------------------------------------------- the decision
@pytest.mark.parametrize(("allow", "chat", "user", "private", "expect"), [
    (TelegramAllow(), 1, 1, True, "answer"),
    (TelegramAllow(), -100, None, False, "answer"),
    (TelegramAllow(users=frozenset({1})), 1, 1, True, "answer"),
    (TelegramAllow(users=frozenset({1})), 2, 2, True, "refuse"),
    (TelegramAllow(users=frozenset({1})), -100, 2, False, "ignore"),
    (TelegramAllow(users=frozenset({1})), -100, None, False, "ignore"),  # no sender
    (TelegramAllow(users=frozenset({1})), -100, 1, False, "answer"),
    (TelegramAllow(chats=frozenset({-100})), -100, 2, False, "answer"),
    (TelegramAllow(chats=frozenset({-100})), -200, 2, False, "ignore"),
    (TelegramAllow(chats=frozenset({-100})), 2, 2, True, "refuse"),
    (TelegramAllow(chats=frozenset({-100}), users=frozenset({1})), -100, 2, False, "ignore"),
    (TelegramAllow(chats=frozenset({-100}), users=frozenset({1})), -100, 1, False, "answer"),
    # A business chat (not "private" here: the bot speaks for the owner) stays silent.
    (TelegramAllow(chats=frozenset({1})), 3, 3, False, "ignore"),
])
def test_decision(allow: TelegramAllow, chat: int, user: int | None, private: bool,
                  expect: str) -> None:
    assert allow.decide(chat_id=chat, user_id=user, private=private) == expect
    assert allow.permits(chat_id=chat, user_id=user) == (expect == "answer")


# ---------------------------------------------------------------------- the settings
def load(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    (tmp_path / "chatbridge.toml").write_text(toml)
    return load_config(load_settings(BASE, cwd=tmp_path))


def test_settings(tmp_path: Path) -> None:
    assert load(tmp_path, "").allow == TelegramAllow()
    allow = load(tmp_path, """
[telegram.allow]
chats = [-1001234567890, "-1009876543210", " 42 "]
users = [111111111]
""").allow
    assert allow == TelegramAllow(chats=frozenset({-1001234567890, -1009876543210, 42}),
                                  users=frozenset({111111111}))


@pytest.mark.parametrize(("toml", "expect"), [
    ("[telegram]\nallow = []\n", r"\[telegram.allow\] must be a table"),
    ("[telegram.allow]\ngroups = [1]\n", "unknown setting.*groups"),
    ("[telegram.allow]\nusers = 1\n", "users must be a list"),
    ("[telegram.allow]\nusers = [\"@alice\"]\n", "not a numeric id"),
    ("[telegram.allow]\nchats = [true]\n", "not a numeric id"),
    ("[telegram.allow]\nchats = [1.5]\n", "not a numeric id"),
])
def test_bad_settings(tmp_path: Path, toml: str, expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        load(tmp_path, toml)


# ---------------------------------------------------------------------- end to end
async def stored_messages(bot: Bot) -> int:
    async with bot.runtime.store.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one())


async def test_private_chat_of_someone_not_allowed_gets_one_refusal(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    toml = TOML + f"[telegram.allow]\nusers = [{ALICE['id']}]\n"
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, toml)
    fake_model.default = Reply(text="Hello Alice.")
    async with run_bot(settings, bot_api, fake_model) as bot:
        hello = message("hi, I'm Bob", sender=BOB)
        bot.send(hello)
        assert await bot.answered(BOB["id"]) == [DENIED]
        bot.send(hello)  # redelivered
        await bot.settle(0.6)
        assert bot_api.texts(BOB["id"]) == [DENIED]
        bot.send(message("/start", sender=BOB))  # commands are refused, not run
        assert await bot.answered(BOB["id"], 2) == [DENIED, DENIED]
        assert fake_model.requests == [] and await stored_messages(bot) == 0

        bot.send(message("hi"))
        assert await bot.answered(ALICE["id"]) == ["Hello Alice."]
        assert bot.model_texts() == ["hi"]


async def test_groups_not_allowed_are_silent(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    toml = TOML + f"[telegram.allow]\nchats = [{ALICE['id']}, \"{GROUP['id']}\"]\n"
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, toml)
    fake_model.default = Reply(text="Answered.")
    customer = {"id": 333333333, "is_bot": False, "first_name": "Customer"}
    async with run_bot(settings, bot_api, fake_model) as bot:
        handle = f"/help@{BOT_USER['username']}"
        bot.send(mention("anyone?", chat=FORUM, sender=BOB))
        bot.send(message(handle, chat=FORUM, sender=BOB))
        bot.send(message("Do you ship to Berlin?", sender=customer,
                         chat={"id": customer["id"], "type": "private", "first_name": "C"},
                         business_connection_id="BiZ1"), kind="business_message")
        await asyncio.sleep(0.5)
        await bot.settle(0.5)
        assert bot_api.texts(FORUM["id"]) == [] and bot_api.texts(customer["id"]) == []
        assert fake_model.requests == [] and await stored_messages(bot) == 0

        bot.send(mention("anyone?", sender=BOB))  # GROUP is listed (as a string)
        assert await bot.answered(GROUP["id"]) == ["Answered."]
        bot.send(message("hello"))  # Alice's private chat is listed
        assert await bot.answered(ALICE["id"]) == ["Answered."]
        bot.send(message("and me?", sender=BOB))  # Bob's is not: a polite refusal
        assert await bot.answered(BOB["id"]) == [DENIED]
        assert len(fake_model.requests) == 2
