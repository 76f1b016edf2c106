"""Messages that used to mislead: deep Markdown, an update without a chat, a 100-photo
album, a file Telegram will not hand over. The real PTB bot against the fake Bot API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bots.telegram.conftest import ALICE, Bot, message, png, run_bot, update
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.bots.telegram.test_webhook import post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply


def photo(file_id: str) -> list[dict[str, Any]]:
    return [{"file_id": file_id, "file_unique_id": file_id, "width": 64, "height": 48}]


def images_in(content: Any) -> int:
    return 0 if isinstance(content, str) else [p["type"] for p in content].count("image_url")


def texts_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p["type"] == "text")


async def test_markdown_nested_deeper_than_the_parser_goes_is_sent_as_text(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="Look:\n\n" + "> " * 25 + "the deepest thought"))
    bot.send(message("quote something"))
    [text] = await bot.answered(ALICE["id"])
    assert "the deepest thought" in text and "(no answer)" not in text


async def test_webhook_update_without_a_chat_is_400(tmp_path: Path, bot_api: FakeBotApi,
                                                    fake_model: FakeModelServer,
                                                    sqlite_url: str) -> None:
    port, settings = webhook_settings(tmp_path, bot_api, fake_model, sqlite_url)
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port):
        no_chat = message("hi")
        del no_chat["chat"]
        response = await post(port, {"update_id": 7, **update(no_chat)})
        assert response.status_code == 400
        ok = await post(port, {"update_id": 8, **update(message("hello"))})
        assert ok.status_code == 200
    assert fake_model.requests and len(fake_model.requests) == 1


async def test_an_album_of_100_photos_gets_one_answer_with_its_caption(bot: Bot) -> None:
    for i in range(100):
        bot.api.add_file(f"p{i}", png("red" if i % 2 else "blue"))
    bot.model.enqueue(Reply(text="Many pictures."))
    for i in range(100):
        extra = {"caption": "what do these have in common?"} if i == 0 else {}
        bot.send(message(media_group_id="4242", photo=photo(f"p{i}"), **extra))
    await bot.answered(ALICE["id"])
    await bot.idle()
    await bot.settle(1.0)
    texts = bot.api.texts(ALICE["id"])
    assert len(texts) == 1, texts
    assert texts[0].startswith("Many pictures.")
    assert "first 10 images" in texts[0]
    assert len(bot.model.requests) == 1
    content = bot.model.requests[-1].json["messages"][-1]["content"]
    assert images_in(content) == 10
    assert "what do these have in common?" in texts_of(content)


async def test_getfile_refusal_keeps_the_caption(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="About your question: yes."))
    # "gone" is not known to the fake Bot API: getFile answers 400 "invalid file_id".
    bot.send(message(caption="is this a cat?", photo=photo("gone")))
    [text] = await bot.answered(ALICE["id"])
    assert text.startswith("About your question: yes.")
    assert "couldn't get your image" in text
    assert texts_of(bot.model.requests[-1].json["messages"][-1]["content"]) == "is this a cat?"
