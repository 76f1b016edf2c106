"""End to end: the real PTB Application long-polling the fake Bot API, the real core."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path

import pytest

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
    png,
    run_bot,
)
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

BOT_ID = BOT_USER["id"]


async def test_private_chat_streams_a_draft_then_sends_one_message(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="Hello **Alice**! Here is `x < y` & more. " * 3))
    bot.send(message("hi there"))
    texts = await bot.answered(ALICE["id"])
    assert texts == [("Hello Alice! Here is x < y & more. " * 3).strip()]
    api = bot.api
    sends = api.calls_to("sendMessage")
    assert len(sends) == 1
    assert sends[0].get("parse_mode") == "HTML"
    assert "<b>Alice</b>" in sends[0].get("text") and "&lt;" in sends[0].get("text")
    assert sends[0].get("reply_parameters") is None  # no quoting in a private chat
    drafts = api.calls_to("sendMessageDraft")
    assert drafts and all(d.get("draft_id") == drafts[0].get("draft_id") for d in drafts)
    assert drafts[0].at < sends[0].at
    assert not api.calls_to("editMessageText")
    assert api.calls_to("sendChatAction")[0].get("action") == "typing"
    assert bot.model_texts() == ["hi there"]
    commands = api.calls_to("setMyCommands")[0].get("commands")
    assert [c["command"] for c in commands] == ["start", "help", "reset", "summary", "compact",
                                               "model"]
    assert api.calls_to("getUpdates")[0].get("allowed_updates") == [
        "message", "business_message", "edited_business_message", "deleted_business_messages",
        "business_connection", "message_reaction", "stopped_message_generation",
        "callback_query"]


async def test_conversation_is_remembered(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="Nice to meet you, Ann."), Reply(text="You are Ann."))
    bot.send(message("My name is Ann."))
    await bot.answered(ALICE["id"])
    bot.send(message("What is my name?"))
    assert await bot.answered(ALICE["id"], 2) == ["Nice to meet you, Ann.", "You are Ann."]
    assert bot.model_texts() == ["My name is Ann.", "Nice to meet you, Ann.",
                                 "What is my name?"]


async def test_group_answers_only_when_addressed(bot: Bot) -> None:
    bot.model.default = Reply(text="Group answer, streamed in several edits " * 4)
    bot.send(message("just chatting, not for the bot", chat=GROUP))
    bot.send(message("/reset", chat=GROUP, text_entities=None) | {
        "text": "/reset@other_bot",
        "entities": [{"type": "bot_command", "offset": 0, "length": 16}]})
    await asyncio.sleep(0.5)
    assert bot.model.requests == [] and bot.api.texts(GROUP["id"]) == []

    asked = mention("what is 2+2?", sender=BOB)
    bot.send(asked)
    texts = await bot.answered(GROUP["id"])
    assert texts == [("Group answer, streamed in several edits " * 4).strip()]
    first = bot.api.calls_to("sendMessage")[0]
    assert first.get("reply_parameters")["message_id"] == asked["message_id"]
    assert bot.api.calls_to("editMessageText"), "groups stream by editing"
    assert not bot.api.calls_to("sendMessageDraft")
    assert bot.model_texts() == ["Bob Stone: what is 2+2?"]  # shared: the author is named

    # Replying to the bot's message addresses it too, without a mention.
    ours = bot.api.sent(GROUP["id"])[0]
    bot_message = {"message_id": ours.message_id, "date": 0, "from": BOT_USER, "chat": GROUP,
                   "text": ours.text}
    bot.send(message("and times 3?", chat=GROUP, reply_to_message=bot_message))
    await bot.answered(GROUP["id"], 2)
    assert bot.model_texts()[-1] == "Alice: and times 3?"
    # A text mention (a user without a username) also addresses it.
    bot.send(message("Bridge, hello", chat=GROUP, entities=[
        {"type": "text_mention", "offset": 0, "length": 6, "user": BOT_USER}]))
    await bot.answered(GROUP["id"], 3)
    assert len(bot.model.requests) == 3


async def test_forum_topics_are_separate_conversations(bot: Bot) -> None:
    bot.model.default = Reply(text="ok")
    for topic, text in ((7, "topic seven"), (9, "topic nine"), (7, "seven again")):
        before = len(bot.model.requests)
        bot.send(mention(text, chat=FORUM, message_thread_id=topic, is_topic_message=True))
        await bot.api.wait_for(lambda: len(bot.model.requests) > before)  # noqa: B023
        await bot.settle()
    assert bot.model_texts(1) == ["Alice: topic nine"]
    assert bot.model_texts(2) == ["Alice: topic seven", "ok", "Alice: seven again"]
    threads = [c.get("message_thread_id") for c in bot.api.calls_to("sendMessage")]
    assert threads == [7, 9, 7]
    # A reply chain in a group that is not a forum carries a thread id that is no topic.
    bot.send(mention("plain", message_thread_id=5))
    await bot.api.wait_for(lambda: bot.api.texts(GROUP["id"]))
    await bot.settle()
    assert bot.api.calls_to("sendMessage")[-1].get("message_thread_id") is None


async def test_photo_is_downloaded_and_sent_as_data(bot: Bot) -> None:
    bot.api.add_file("small", png("red", (32, 24)))
    bot.api.add_file("large", png("blue", (320, 240)))
    bot.model.enqueue(Reply(text="A blue picture."))
    bot.send(message(caption="what colour?", photo=[
        {"file_id": "small", "file_unique_id": "s", "width": 32, "height": 24,
         "file_size": 100},
        {"file_id": "large", "file_unique_id": "l", "width": 320, "height": 240,
         "file_size": 2000}]))
    assert await bot.answered(ALICE["id"]) == ["A blue picture."]
    assert [c.get("file_id") for c in bot.api.calls_to("getFile")] == ["large"]
    content = bot.model.requests[-1].json["messages"][-1]["content"]
    kinds = [part["type"] for part in content]
    assert "image_url" in kinds and {"type": "text", "text": "what colour?"} in content
    url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1])  # the bytes, not a Telegram URL
    body = b"".join(r.body for r in bot.model.requests)
    assert TOKEN.encode() not in body and b"/file/bot" not in body


async def test_album_is_one_request_with_its_caption(bot: Bot) -> None:
    colours = ("red", "green", "blue")
    for colour in colours:
        bot.api.add_file(colour, png(colour))
    bot.model.enqueue(Reply(text="Three colours."))
    for i, colour in enumerate(colours):
        extra = {"caption": "compare these"} if i == 1 else {}
        bot.send(message(media_group_id="13579", photo=[
            {"file_id": colour, "file_unique_id": colour, "width": 64, "height": 48}], **extra))
    assert await bot.answered(ALICE["id"]) == ["Three colours."]
    assert len(bot.model.requests) == 1
    content = bot.model.requests[-1].json["messages"][-1]["content"]
    assert [p["type"] for p in content].count("image_url") == 3
    assert {"type": "text", "text": "compare these"} in content


async def test_image_document_and_size_limit(bot: Bot) -> None:
    bot.api.add_file("doc", png("white"))
    bot.model.enqueue(Reply(text="A white image."))
    bot.send(message(caption="and this?", document={
        "file_id": "doc", "file_unique_id": "d", "file_name": "scan.png",
        "mime_type": "image/png", "file_size": 1000}))
    assert await bot.answered(ALICE["id"]) == ["A white image."]

    bot.send(message(document={"file_id": "huge", "file_unique_id": "h", "file_name": "x.jpg",
                               "mime_type": "image/jpeg", "file_size": 25_000_000}))
    texts = await bot.answered(ALICE["id"], 2)
    assert "too large" in texts[-1] and "20 MB" in texts[-1]
    # The size is not always known before getFile: the server's refusal says the same.
    bot.api.add_file("big", b"x", size=30_000_000)
    bot.send(message(photo=[{"file_id": "big", "file_unique_id": "b", "width": 9000,
                             "height": 9000}]))
    texts = await bot.answered(ALICE["id"], 3)
    assert "too large" in texts[-1]
    assert len(bot.model.requests) == 1


async def test_voice_and_stickers_get_a_note(bot: Bot) -> None:
    bot.send(message(voice={"file_id": "v", "file_unique_id": "v", "duration": 3}))
    texts = await bot.answered(ALICE["id"])
    assert "voice messages" in texts[0] and "images" in texts[0]
    bot.send(message(sticker={"file_id": "s", "file_unique_id": "s", "type": "regular",
                              "width": 512, "height": 512, "is_animated": False,
                              "is_video": False}))
    texts = await bot.answered(ALICE["id"], 2)
    assert "stickers" in texts[1]
    assert bot.model.requests == []


async def test_commands_start_help_reset_model(bot: Bot) -> None:
    chat = ALICE["id"]
    bot.send(message("/start"))
    assert "Hello" in (await bot.answered(chat))[0]
    bot.send(message("/help"))
    assert "/reset" in (await bot.answered(chat, 2))[1]

    bot.model.default = Reply(text="noted")
    bot.send(message("remember 42"))
    await bot.answered(chat, 3)
    bot.send(message("/model"))
    shown = (await bot.answered(chat, 4))[3]
    assert "qwen-plus" in shown and "qwen-max" in shown
    bot.send(message("/model qwen-max"))
    assert "qwen-max" in (await bot.answered(chat, 5))[4]
    bot.send(message("/model gpt-9"))
    assert "Unknown model" in (await bot.answered(chat, 6))[5]
    bot.send(message("what did I say?"))
    await bot.answered(chat, 7)
    assert bot.model.requests[-1].json["model"] == "qwen-max"
    assert bot.model_texts() == ["remember 42", "noted", "what did I say?"]

    bot.send(message("/reset"))
    assert "new conversation" in (await bot.answered(chat, 8))[7]
    bot.send(message("fresh start"))
    await bot.answered(chat, 9)
    assert bot.model_texts() == ["fresh start"]
    assert len(bot.model.requests) == 3  # commands never reach the model


async def test_long_markdown_answer_is_split_valid_and_complete(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, sqlite_url: str
) -> None:
    # ~14,000 characters: above the default max_answer_chars (12,000), raised here.
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url,
                             TOML + "\n[defaults]\nmax_answer_chars = 50000\n")
    async with run_bot(settings, bot_api, fake_model) as bot:
        await _long_markdown_answer(bot)


async def _long_markdown_answer(bot: Bot) -> None:
    paragraphs = [f"Paragraph {i} has **bold {i}**, _italics_ and a [link](https://x.org/{i})."
                  for i in range(100)]
    code = "\n".join(f"    value_{i} = compute({i}) < limit & ok" for i in range(120))
    answer = "\n\n".join(paragraphs[:50]) + f"\n\n```python\n{code}\n```\n\n" + \
        "\n\n".join(paragraphs[50:])
    bot.model.enqueue(Reply(text=answer, chunk_size=400))
    bot.send(message("write a lot"))
    await bot.api.wait_for(lambda: len(bot.api.calls_to("sendMessage")) >= 3)
    await bot.settle()
    sends = bot.api.calls_to("sendMessage")
    texts = bot.api.texts(ALICE["id"])
    assert len(texts) == len(sends) >= 3  # every part was accepted by the server
    assert all(len(t) <= 4096 for t in texts)
    joined = "\n".join(texts)
    for i in range(100):
        assert f"Paragraph {i} has bold {i}, italics and a link." in joined
    for i in range(120):
        assert f"value_{i} = compute({i}) < limit & ok" in joined
    for call in sends:  # a code block cut in two stays a code block on both sides
        html = call.get("text")
        assert html.count("<pre>") == html.count("</pre>")
    assert bot.api.calls_to("sendMessageDraft")
    assert sum("value_" in t for t in texts) >= 2


async def test_flood_control_is_honoured(bot: Bot) -> None:
    bot.api.fail("sendMessage", 429, retry_after=1)
    bot.model.enqueue(Reply(text="after the flood"))
    bot.send(message("hi"))
    assert await bot.answered(ALICE["id"]) == ["after the flood"]
    first, second = bot.api.calls_to("sendMessage")
    assert second.at - first.at >= 0.95


async def test_blocked_user_is_logged_and_the_bot_keeps_going(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    bot.api.blocked.add(ALICE["id"])
    bot.model.enqueue(Reply(text="you will not see this"), Reply(text="hello Bob"))
    with caplog.at_level(logging.WARNING):
        bot.send(message("hi"))
        await bot.api.wait_for(lambda: any("cannot be written to" in r.getMessage()
                                           for r in caplog.records))
    await bot.settle()
    to_alice = [c.method for c in bot.api.calls if c.get("chat_id") == ALICE["id"]
                and c.method != "sendChatAction"]
    assert len(to_alice) == 1  # the first 403 ends the turn's output: no retries
    bot.send(message("hi", sender=BOB))
    assert await bot.answered(BOB["id"]) == ["hello Bob"]
    assert TOKEN not in caplog.text


async def test_parse_error_falls_back_to_plain_text(bot: Bot) -> None:
    bot.api.reject_html = 100  # the server refuses every HTML text
    bot.model.enqueue(Reply(text="**bold** and <angle> & co"))
    bot.send(message("hi"))
    assert await bot.answered(ALICE["id"]) == ["bold and <angle> & co"]
    assert bot.api.calls_to("sendMessage")[-1].get("parse_mode") is None


async def test_not_modified_is_tolerated(bot: Bot) -> None:
    bot.api.fail("editMessageText", 400, "Bad Request: message is not modified: specified "
                 "new message content and reply markup are exactly the same", times=50)
    bot.model.enqueue(Reply(text="unchanged edits are fine " * 5))
    bot.send(mention("go"))
    texts = await bot.answered(GROUP["id"])
    assert len(texts) == 1  # no error message followed


async def test_model_failure_is_a_clear_message(bot: Bot) -> None:
    bot.model.enqueue(Reply(kind="error", status=401))
    bot.send(message("hi"))
    texts = await bot.answered(ALICE["id"])
    assert "API key" in texts[0]


async def test_business_messages_have_their_own_conversation(bot: Bot) -> None:
    customer = {"id": 333333333, "is_bot": False, "first_name": "Customer"}
    owner = {"id": 444444444, "is_bot": False, "first_name": "Owner"}
    chat = {"id": customer["id"], "type": "private", "first_name": "Customer"}
    bot.model.enqueue(Reply(text="Yes, we ship to Berlin."))
    # The owner writing by hand in another customer's chat pauses the bot there only
    # (issue 13); the owner's words never reach the model.
    other = {"id": 777777777, "type": "private", "first_name": "Other"}
    bot.send(message("I'll answer this one myself", sender=owner, chat=other,
                     business_connection_id="BiZ1"), kind="business_message")
    bot.send(message("Do you ship to Berlin?", sender=customer, chat=chat,
                     business_connection_id="BiZ1"), kind="business_message")
    assert await bot.answered(customer["id"]) == ["Yes, we ship to Berlin."]
    sent = bot.api.calls_to("sendMessage")[0]
    assert sent.get("business_connection_id") == "BiZ1"
    assert not bot.api.calls_to("sendMessageDraft")  # drafts don't exist for business chats
    assert bot.model_texts() == ["Do you ship to Berlin?"]
    scopes = await _scopes(bot)
    assert f"{BOT_ID}/BiZ1/{customer['id']}" in scopes


async def _scopes(bot: Bot) -> set[str]:
    from sqlalchemy import text

    async with bot.runtime.store.engine.connect() as conn:
        rows = await conn.execute(text("SELECT scope_key FROM conversations"))
        return {r[0] for r in rows}


async def test_a_slow_turn_does_not_hold_up_other_chats(bot: Bot) -> None:
    bot.model.enqueue(Reply(text="slow answer", delay=2.0), Reply(text="fast answer"))
    bot.send(message("slow please"))
    await bot.api.wait_for(lambda: bot.model.requests)
    started = time.monotonic()
    bot.send(message("fast please", sender=BOB))
    assert await bot.answered(BOB["id"]) == ["fast answer"]
    assert time.monotonic() - started < 1.5
    assert bot.api.texts(ALICE["id"]) == []
    assert await bot.answered(ALICE["id"]) == ["slow answer"]


async def test_profiles_per_chat_and_greetings(tmp_path: Path, bot_api: FakeBotApi,
                                               fake_model: FakeModelServer,
                                               sqlite_url: str) -> None:
    toml = TOML + f"""
profile = "general"
greeting = "Hi from the general bot."
[telegram.chats]
"{GROUP['id']}" = "support"
[telegram.greetings]
support = "Welcome to support!"
[profiles.general]
system_prompt = "You are general."
[profiles.support]
system_prompt = "You are support."
"""
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, toml=toml)
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("/start"))
        assert await bot.answered(ALICE["id"]) == ["Hi from the general bot."]
        bot.send(message("/start@bridge_bot", chat=GROUP, entities=[
            {"type": "bot_command", "offset": 0, "length": 17}]))
        assert await bot.answered(GROUP["id"]) == ["Welcome to support!"]
        fake_model.default = Reply(text="ok")
        bot.send(mention("help me"))
        await bot.answered(GROUP["id"], 2)
        bot.send(message("hello"))
        await bot.answered(ALICE["id"], 2)
        prompts = [r.json["messages"][0]["content"] for r in fake_model.requests]
        assert prompts == ["You are support.", "You are general."]


async def test_unknown_and_malformed_commands_get_a_hint_not_the_model(bot: Bot) -> None:
    chat = ALICE["id"]
    bot.send(message("/foo bar"))
    assert "Unknown command /foo" in (await bot.answered(chat))[0]
    bot.send(message("/reset now"))
    hint = (await bot.answered(chat, 2))[1]
    assert "/reset takes nothing after it" in hint
    bot.send(message("/foo@bridge_bot", chat=GROUP))  # addressed to us in a group
    assert "Unknown command /foo" in (await bot.answered(GROUP["id"]))[0]
    bot.send(message("/weather", chat=GROUP))  # a bare command: some other bot's
    bot.model.default = Reply(text="hi")
    bot.send(message("hello"))
    await bot.answered(chat, 3)
    assert len(bot.model.requests) == 1 and bot.model_texts() == ["hello"]
    assert len(await bot.answered(GROUP["id"])) == 1


async def test_summary_and_compact_commands(bot: Bot) -> None:
    chat = ALICE["id"]
    bot.send(message("/summary"))
    assert "No summary yet" in (await bot.answered(chat))[0]
    bot.send(message("FACT: my dog is called Rex"))
    await bot.answered(chat, 2)
    bot.send(message("/compact"))
    assert "Compacted" in (await bot.answered(chat, 3))[2]
    bot.send(message("/summary"))
    assert "FACT: my dog is called Rex" in (await bot.answered(chat, 4))[3]
    bot.send(message("/compact now"))
    assert "takes nothing after it" in (await bot.answered(chat, 5))[4]
    from tests.fakes.model_server import is_summary_request

    turns = [r for r in bot.model.requests if not is_summary_request(r.json)]
    assert len(turns) == 1  # the commands started no turn (only the summary call)
