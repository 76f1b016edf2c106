"""Telegram Business through the real adapter and the fake Bot API: the connection stored
and respected, answers as the business, the owner's pause, edited and deleted messages."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bots.db import create_engine, upgrade
from core.business import BusinessState
from core.store.models import utcnow
from tests.bots.telegram.conftest import BOT_USER, Bot, make_settings, message, run_bot
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

OWNER = {"id": 555555555, "is_bot": False, "first_name": "Olga"}
CUSTOMER = {"id": 333333333, "is_bot": False, "first_name": "Cara"}
CHAT = {"id": CUSTOMER["id"], "type": "private", "first_name": "Cara"}
LINK = "BiZ1"
SCOPE = f"{BOT_USER['id']}/{LINK}/{CUSTOMER['id']}"


def connection(*, enabled: bool = True, can_reply: bool = True) -> dict[str, Any]:
    return {"business_connection": {
        "id": LINK, "user": OWNER, "user_chat_id": OWNER["id"], "date": int(time.time()),
        "is_enabled": enabled, "rights": {"can_reply": can_reply}}}


def customer(text: str, **extra: Any) -> dict[str, Any]:
    return message(text, sender=CUSTOMER, chat=CHAT, business_connection_id=LINK, **extra)


async def test_connection_stored_and_respected(bot: Bot) -> None:
    bot.api.push(connection(can_reply=False))
    state = BusinessState(bot.runtime.store)
    await bot.api.wait_for(lambda: bot.api.calls_to("getUpdates")[1:])
    await bot.idle()
    found = None
    for _ in range(100):
        if (found := await state.connection(LINK)) is not None:
            break
        await bot.settle(0.05)
    assert found is not None and found.enabled and not found.can_reply
    bot.send(customer("Are you open on Sunday?"), kind="business_message")
    await bot.idle()
    await bot.settle()
    assert bot.api.texts(CUSTOMER["id"]) == [] and bot.model.requests == []
    # Allowed to reply again: the answer goes out as the business.
    bot.api.push(connection(can_reply=True))
    for _ in range(100):
        link = await state.connection(LINK)
        if link is not None and link.can_reply:
            break
        await bot.settle(0.05)
    bot.model.default = Reply(text="Yes, 10 to 4.")
    bot.send(customer("And on Monday?"), kind="business_message")
    assert await bot.answered(CUSTOMER["id"]) == ["Yes, 10 to 4."]
    sent = [c for c in bot.api.calls if c.method == "sendMessage"]
    assert sent and all(c.get("business_connection_id") == LINK for c in sent)


async def test_owner_writing_by_hand_pauses_the_bot(bot: Bot) -> None:
    bot.send(message("Hi Cara, Olga here, I'll check.", sender=OWNER, chat=CHAT,
                     business_connection_id=LINK), kind="business_message")
    state = BusinessState(bot.runtime.store)
    for _ in range(100):
        if await state.paused_until(platform="telegram", scope=SCOPE):
            break
        await bot.settle(0.05)
    until = await state.paused_until(platform="telegram", scope=SCOPE)
    assert until is not None and timedelta(minutes=29) < until - utcnow() <= timedelta(minutes=30)
    bot.send(customer("Thanks Olga!"), kind="business_message")
    await bot.idle()
    await bot.settle()
    assert bot.api.texts(CUSTOMER["id"]) == [] and bot.model.requests == []
    # The pause over (as if 30 minutes passed), the bot answers again.
    await state.pause(platform="telegram", scope=SCOPE, until=utcnow() - timedelta(seconds=1))
    bot.model.default = Reply(text="Happy to help.")
    bot.send(customer("Anything else?"), kind="business_message")
    assert await bot.answered(CUSTOMER["id"]) == ["Happy to help."]


async def test_edited_before_the_answer_is_answered_as_edited_deleted_not_at_all(
        bot: Bot) -> None:
    bot.model.enqueue(Reply(text="first answer", delay=1.0), Reply(text="second answer"))
    bot.send(customer("first question"), kind="business_message")
    await bot.api.wait_for(lambda: bot.model.requests)  # the first turn is running
    second = customer("secnod qestion")
    third = customer("never mind this one")
    bot.send(second, kind="business_message")
    bot.send(third, kind="business_message")
    edited = dict(second, text="second question", edit_date=int(time.time()))
    bot.api.push({"edited_business_message": edited})
    bot.api.push({"deleted_business_messages": {
        "business_connection_id": LINK, "chat": CHAT, "message_ids": [third["message_id"]]}})
    assert await bot.answered(CUSTOMER["id"], 2) == ["first answer", "second answer"]
    await bot.idle()
    assert len(bot.model.requests) == 2
    assert bot.model_texts(1)[-1] == "second question"
    assert "never mind this one" not in str(bot.model.requests[1].json["messages"])


@pytest.fixture
async def any_bot(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
                  db_url: str) -> AsyncIterator[Bot]:
    """A polling bot on SQLite and on PostgreSQL (migrated first)."""
    if not db_url.startswith("sqlite"):
        engine = create_engine(db_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    async with run_bot(settings, bot_api, fake_model) as running:
        yield running


async def test_an_unknown_connection_is_asked_for_and_respected(any_bot: Bot) -> None:
    bot = any_bot
    # Connected before this bot ran: no business_connection update ever came.
    bot.api.business_connections[LINK] = connection(can_reply=False)["business_connection"]
    bot.send(customer("Are you open on Sunday?"), kind="business_message")
    await bot.idle()
    await bot.settle()
    [asked] = bot.api.calls_to("getBusinessConnection")
    assert asked.get("business_connection_id") == LINK
    assert bot.api.texts(CUSTOMER["id"]) == [] and bot.model.requests == []
    stored = await BusinessState(bot.runtime.store).connection(LINK)
    assert stored is not None and stored.user_id == str(OWNER["id"]) and not stored.can_reply
    bot.send(customer("Hello?"), kind="business_message")
    await bot.idle()
    await bot.settle()
    assert len(bot.api.calls_to("getBusinessConnection")) == 1  # stored: asked once
    assert bot.api.texts(CUSTOMER["id"]) == []


async def test_a_connection_that_may_reply_is_answered_as_the_business(any_bot: Bot) -> None:
    bot = any_bot
    bot.api.business_connections[LINK] = connection()["business_connection"]
    bot.model.default = Reply(text="Yes, 10 to 4.")
    bot.send(customer("Are you open on Sunday?"), kind="business_message")
    assert await bot.answered(CUSTOMER["id"]) == ["Yes, 10 to 4."]
    assert len(bot.api.calls_to("getBusinessConnection")) == 1
