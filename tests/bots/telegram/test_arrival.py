"""How messages arrive: albums, messages sent during a turn, business customers, order
within a chat, and what a stop leaves for the next start (or another replica)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.bots.telegram.conftest import (
    ALICE,
    GROUP,
    TOML,
    Bot,
    make_settings,
    message,
    png,
    run_bot,
    update,
)
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.telegram.test_webhook import free_port, migrated, post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply

DANA = {"id": 666666666, "is_bot": False, "first_name": "Dana"}
SLOW_ALBUMS = TOML.replace("album_seconds = 0.3", "album_seconds = 1.0")
COLOURS = ("red", "green", "blue")


def photo(file_id: str) -> list[dict[str, Any]]:
    return [{"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 48}]


def texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content if part["type"] == "text"]


def images_in(content: Any) -> int:
    return 0 if isinstance(content, str) else [p["type"] for p in content].count("image_url")


def album(colour: str, group: str = "55", **extra: Any) -> dict[str, Any]:
    """One album item (a photo), in Alice's private chat unless ``chat`` is given."""
    return message(media_group_id=group, photo=photo(colour), **extra)


async def test_a_late_album_item_with_the_caption_is_answered(bot: Bot) -> None:
    for colour in COLOURS:
        bot.api.add_file(colour, png(colour))
    bot.model.enqueue(Reply(text="Two pictures."), Reply(text="Blue is the brightest."))
    bot.send(album("red", "777"))
    bot.send(album("green", "777"))
    assert await bot.answered(ALICE["id"]) == ["Two pictures."]
    # The album's last item, with the question, comes after the gathering window.
    bot.send(album("blue", "777", caption="which is brightest?"))
    assert await bot.answered(ALICE["id"], 2) == ["Two pictures.", "Blue is the brightest."]
    assert len(bot.model.requests) == 2
    assert texts_of(bot.model.requests[-1].json["messages"][-1]["content"]) == \
        ["which is brightest?"]


async def test_an_album_arriving_over_time_is_one_turn(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, toml=SLOW_ALBUMS)
    for colour in COLOURS:
        bot_api.add_file(colour, png(colour))
    fake_model.enqueue(Reply(text="Three colours."))
    async with run_bot(settings, bot_api, fake_model) as bot:
        for n, colour in enumerate(COLOURS):
            bot.send(album(colour, "246", **({"caption": "compare"} if n == 0 else {})))
            await asyncio.sleep(0.1)
        assert await bot.answered(ALICE["id"]) == ["Three colours."]
        await bot.idle()
    assert len(fake_model.requests) == 1
    content = fake_model.requests[0].json["messages"][-1]["content"]
    assert images_in(content) == 3 and texts_of(content) == ["compare"]


async def test_an_album_split_across_two_replicas_is_one_turn(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, db_url: str) -> None:
    await migrated(db_url)
    port_a, settings = webhook_settings(tmp_path, bot_api, fake_model, db_url, SLOW_ALBUMS)
    port_b = free_port()
    for colour in COLOURS:
        bot_api.add_file(colour, png(colour))
    fake_model.default = Reply(text="Three colours.")
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port_a) as a, \
            run_bot(settings, bot_api, fake_model, webhook=True, port=port_b) as b:
        items = [album(c, "99", **({"caption": "compare"} if c == "blue" else {}))
                 for c in COLOURS]
        # Telegram's deliveries of one album reach both replicas.
        for n, (port, item) in enumerate(zip((port_a, port_b, port_b), items, strict=True)):
            assert (await post(port, {"update_id": 60 + n, **update(item)})).status_code == 200
        assert await a.answered(ALICE["id"]) == ["Three colours."]
        await a.idle()
        await b.idle()
    assert bot_api.texts(ALICE["id"]) == ["Three colours."]
    assert len(fake_model.requests) == 1
    content = fake_model.requests[0].json["messages"][-1]["content"]
    assert images_in(content) == 3 and texts_of(content) == ["compare"]


async def test_an_album_in_a_group_is_answered_when_its_caption_mentions_the_bot(
        bot: Bot) -> None:
    for colour in COLOURS:
        bot.api.add_file(colour, png(colour))
    bot.model.enqueue(Reply(text="Three colours."))
    bot.send(album("red", "31", chat=GROUP))
    bot.send(album("green", "31", chat=GROUP, caption="@bridge_bot compare",
                   caption_entities=[{"type": "mention", "offset": 0, "length": 11}]))
    bot.send(album("blue", "31", chat=GROUP))
    bot.send(album("red", "32", chat=GROUP))  # another album, not for the bot
    assert await bot.answered(GROUP["id"]) == ["Three colours."]
    await bot.idle()
    assert len(bot.model.requests) == 1
    content = bot.model.requests[0].json["messages"][-1]["content"]
    assert images_in(content) == 3 and texts_of(content) == ["Alice: compare"]


async def test_messages_sent_during_a_turn_are_answered_together(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="first answer", delay=1.0), Reply(text="second answer"))
    bot.send(message("one"))
    await bot.api.wait_for(lambda: bot.model.requests)  # the first turn is running
    bot.send(message("two"))
    last = bot.send(message("three"))["message"]
    assert await bot.answered(ALICE["id"], 2) == ["first answer", "second answer"]
    await bot.idle()
    assert len(bot.model.requests) == 2
    assert bot.model_texts(0) == ["one"]
    assert bot.model_texts(1) == ["one", "first answer", "two", "three"]
    # The answer is drafted where the last message is answered.
    drafts = bot.api.calls_to("sendMessageDraft")
    assert drafts[-1].get("draft_id") == last["message_id"]


async def test_a_command_between_messages_runs_in_its_place(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="first answer", delay=1.0), Reply(text="fresh answer"))
    bot.send(message("one"))
    await bot.api.wait_for(lambda: bot.model.requests)
    bot.send(message("/reset"))
    bot.send(message("after the reset"))
    texts = await bot.answered(ALICE["id"], 3)
    assert texts[0] == "first answer" and "new conversation" in texts[1]
    assert texts[2] == "fresh answer"
    assert bot.model_texts(1) == ["after the reset"]


async def test_business_customers_cannot_run_commands(bot: Bot) -> None:
    customer = {"id": 333333333, "is_bot": False, "first_name": "Customer"}
    chat = {"id": customer["id"], "type": "private", "first_name": "Customer"}
    bot.model.default = Reply(text="I'm the shop's assistant.")
    for n, text in enumerate(("/model qwen-max", "/reset", "/help"), start=1):
        bot.send(message(text, sender=customer, chat=chat, business_connection_id="BiZ1"),
                 kind="business_message")
        await bot.answered(customer["id"], n)
    assert bot.api.texts(customer["id"]) == ["I'm the shop's assistant."] * 3
    # Plain text to the model, in one conversation; the shop's model is unchanged.
    assert bot.model_texts() == ["/model qwen-max", "I'm the shop's assistant.", "/reset",
                                 "I'm the shop's assistant.", "/help"]
    assert {r.json["model"] for r in bot.model.requests} == {"qwen-plus"}


async def test_turns_of_one_chat_run_in_arrival_order(bot: Bot) -> None:
    bot.api.add_file("pic", png("red"))
    bot.api.stall("getFile", 0.3)  # the first message takes a while to prepare
    bot.model.enqueue(Reply(text="first answer", delay=0.8), Reply(text="second answer"))
    bot.send(message(caption="first question", photo=photo("pic")))
    await bot.api.wait_for(lambda: bot.api.calls_to("getFile"))
    bot.send(message("second question"))
    assert await bot.answered(ALICE["id"], 2) == ["first answer", "second answer"]
    assert texts_of(bot.model.requests[0].json["messages"][-1]["content"]) == \
        ["first question"]
    assert bot.model_texts(1)[-1] == "second question"


async def test_a_turn_running_at_stop_is_finished(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text="finished in time", delay=0.8))
    async with run_bot(settings, bot_api, fake_model):
        bot_api.push(update(message("quick question")))
        await bot_api.wait_for(lambda: fake_model.requests)
    assert bot_api.texts(ALICE["id"]) == ["finished in time"]


async def test_what_a_stop_leaves_is_answered_by_the_next_start(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url, SLOW_ALBUMS)
    for colour in COLOURS:
        bot_api.add_file(colour, png(colour))
    fake_model.enqueue(Reply(text="too slow", delay=5.0))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port, grace=0.3):
        body = {"update_id": 70, **update(message("a long question", sender=DANA))}
        assert (await post(port, body)).status_code == 200
        await bot_api.wait_for(lambda: fake_model.requests)  # its turn is running
        for n, colour in enumerate(COLOURS, start=71):
            extra = {"caption": "compare"} if colour == "green" else {}
            body = {"update_id": n, **update(album(colour, **extra))}
            assert (await post(port, body)).status_code == 200
        # Stopped while the album gathers and the turn runs beyond the grace period.
    assert bot_api.texts(ALICE["id"]) == [] and bot_api.texts(DANA["id"]) == []
    fake_model.default = Reply(text="answered after all")
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port) as bot:
        assert await bot.answered(ALICE["id"]) == ["answered after all"]
        assert await bot.answered(DANA["id"]) == ["answered after all"]
        await bot.idle()
    assert len(fake_model.requests) == 3  # the interrupted turn was asked again
    asked = [r.json["messages"][-1]["content"] for r in fake_model.requests]
    assert asked.count("a long question") == 2
    [content] = [c for c in asked if images_in(c)]
    assert images_in(content) == 3 and texts_of(content) == ["compare"]
    content = next(r.json["messages"][-1]["content"] for r in fake_model.requests
                   if images_in(r.json["messages"][-1]["content"]))
    assert images_in(content) == 3 and texts_of(content) == ["compare"]
    assert len(fake_model.requests) == 3  # the interrupted turn was asked again

