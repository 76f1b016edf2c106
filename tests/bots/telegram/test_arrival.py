"""How messages arrive: late album items, business customers, order within a chat, stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.ext import TypeHandler

from tests.bots.telegram.conftest import (
    ALICE,
    Bot,
    message,
    png,
    run_bot,
    update,
)
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.telegram.test_webhook import post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply


def photo(file_id: str) -> list[dict[str, Any]]:
    return [{"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 48}]


def texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part["type"] == "text"]


async def test_a_late_album_item_with_the_caption_is_answered(bot: Bot) -> None:
    for colour in ("red", "green", "blue"):
        bot.api.add_file(colour, png(colour))
    bot.model.enqueue(Reply(text="Two pictures."), Reply(text="Blue is the brightest."))
    bot.send(message(media_group_id="777", photo=photo("red")))
    bot.send(message(media_group_id="777", photo=photo("green")))
    assert await bot.answered(ALICE["id"]) == ["Two pictures."]
    # The album's last item, with the question, comes after the gathering window.
    bot.send(message(media_group_id="777", photo=photo("blue"), caption="which is brightest?"))
    assert await bot.answered(ALICE["id"], 2) == ["Two pictures.", "Blue is the brightest."]
    assert len(bot.model.requests) == 2
    assert texts_of(bot.model.requests[-1].json["messages"][-1]["content"]) == \
        ["which is brightest?"]


async def test_business_customers_cannot_run_commands(bot: Bot) -> None:
    customer = {"id": 333333333, "is_bot": False, "first_name": "Customer"}
    chat = {"id": customer["id"], "type": "private", "first_name": "Customer"}
    bot.model.default = Reply(text="I'm the shop's assistant.")
    for text in ("/model qwen-max", "/reset", "/help"):
        bot.send(message(text, sender=customer, chat=chat, business_connection_id="BiZ1"),
                 kind="business_message")
    await bot.answered(customer["id"], 3)
    assert bot.api.texts(customer["id"]) == ["I'm the shop's assistant."] * 3
    # Plain text to the model, in one conversation; the shop's model is unchanged.
    assert bot.model_texts() == ["/model qwen-max", "I'm the shop's assistant.", "/reset",
                                 "I'm the shop's assistant.", "/help"]
    assert {r.json["model"] for r in bot.model.requests} == {"qwen-plus"}


async def test_turns_of_one_chat_start_in_arrival_order(bot: Bot) -> None:
    bot.api.add_file("pic", png("red"))
    bot.api.stall("getFile", 0.3)  # the first message takes a while to prepare
    bot.model.enqueue(Reply(text="first answer", delay=0.8), Reply(text="second answer"))
    bot.send(message(caption="first question", photo=photo("pic")))
    bot.send(message("second question"))
    assert await bot.answered(ALICE["id"], 2) == ["first answer", "second answer"]
    assert texts_of(bot.model.requests[0].json["messages"][-1]["content"]) == \
        ["first question"]
    assert bot.model_texts(1)[-1] == "second question"


async def test_album_items_still_queued_at_stop_are_answered(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url)
    for colour in ("red", "green", "blue"):
        bot_api.add_file(colour, png(colour))
    fake_model.enqueue(Reply(text="Three colours."))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        async def slow(update: Update, context: Any) -> None:
            if update.update_id == 31:
                await asyncio.sleep(0.6)  # the queue behind it is still full at stop

        bot.app.add_handler(TypeHandler(Update, slow), group=-1)
        for n, colour in enumerate(("red", "green", "blue"), start=31):
            extra = {"caption": "compare"} if colour == "green" else {}
            body = {"update_id": n, **update(message(media_group_id="55", photo=photo(colour),
                                                     **extra))}
            assert (await post(port, body)).status_code == 200
    # Stopping handled the queued items, gathered the album and answered it.
    assert bot_api.texts(ALICE["id"]) == ["Three colours."]
    content = fake_model.requests[-1].json["messages"][-1]["content"]
    assert [p["type"] for p in content].count("image_url") == 3
