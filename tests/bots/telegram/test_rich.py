"""Rich messages (Bot API 10.1) end to end, the fallback to HTML on a server without them,
and show_thinking; plus the converter's promise: every streamed prefix is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.telegram.rich import rich_blocks, wants_rich
from tests.bots.telegram.conftest import ALICE, TOML, make_settings, message, run_bot
from tests.bots.telegram.fake_bot_api import ApiError, FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

TABLE = ("Here are the prices:\n\n| Fruit | Price |\n|:------|------:|\n| **Apple** | 1 € |\n"
         "| Pear | `2` € |\n\nAnything else?")
STRUCTURED = "## Plan\n\n" + "".join(f"- step {i}: " + "do it well. " * 12 + "\n"
                                     for i in range(40))
THINKING_TOML = TOML + "\n[defaults]\nshow_thinking = true\nenable_thinking = true\n"


def _validate(api: FakeBotApi, blocks: list[dict[str, object]], *, draft: bool) -> None:
    counted = [0]
    for block in blocks:
        api._block_text(block, draft, counted, 1)


@pytest.mark.parametrize("answer", [TABLE, STRUCTURED, "```python\nprint(1)\n```\n| a |"])
def test_every_streamed_prefix_converts_to_valid_blocks(answer: str) -> None:
    api = FakeBotApi("t")
    for end in range(1, len(answer) + 1, 3):
        blocks = rich_blocks(answer[:end], "thinking so far", draft=True)
        assert blocks is not None
        try:
            _validate(api, blocks, draft=True)
        except ApiError as err:  # pragma: no cover - the assertion's message
            raise AssertionError(f"prefix {answer[:end]!r}: {err.description}") from err


def test_what_goes_rich() -> None:
    assert wants_rich(TABLE) and wants_rich(STRUCTURED) and wants_rich("hi", "hmm")
    assert not wants_rich("Just **text**, short.\n\n- one\n- two")
    table = rich_blocks(TABLE, draft=False)
    assert table is not None
    grid = next(b for b in table if b["type"] == "table")
    assert grid["cells"][0][0] == {"text": "Fruit", "is_header": True}
    assert grid["cells"][1][0]["text"] == [{"type": "bold", "text": "Apple"}]
    assert len(grid["cells"]) == 3  # the separator row is not a row
    assert rich_blocks("x" * 40_000, draft=False) is None  # over the limit: HTML splits it


async def test_a_table_answer_is_a_rich_message_with_a_real_table(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text=TABLE, chunk_size=6, chunk_delay=0.01))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("fruit prices?"))
        await bot.answered(chat)
        await bot.idle()
        sent = bot_api.sent(chat)
        assert len(sent) == 1 and sent[0].rich is not None
        kinds = [b["type"] for b in sent[0].rich["blocks"]]
        assert kinds == ["paragraph", "table", "paragraph"]
        assert not bot_api.calls_to("sendMessage")
        drafts = bot_api.calls_to("sendRichMessageDraft")
        assert drafts and drafts[-1].get("can_stop") is True
        # Before the table began, the draft was HTML as usual.
        assert bot_api.calls_to("sendMessageDraft")[0].at < drafts[0].at
        stored = await bot.runtime.service.record_feedback(
            platform="telegram", ref=f"{chat}/{sent[0].message_id}", user_id="1",
            positive=True)
        assert stored  # the rich message is where the answer is (reactions find it)


async def test_a_server_without_rich_messages_gets_html(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    bot_api.rich = False  # an older (self-hosted) Bot API server
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text=TABLE, chunk_size=6, chunk_delay=0.01),
                       Reply(text=TABLE))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("fruit prices?"))
        await bot.answered(chat)
        await bot.idle()
        sends = bot_api.calls_to("sendMessage")
        assert len(sends) == 1 and sends[0].get("parse_mode") == "HTML"
        assert "Apple" in bot_api.texts(chat)[0]
        tried = len(bot_api.calls_to("sendRichMessageDraft")) + \
            len(bot_api.calls_to("sendRichMessage"))
        assert tried == 1  # learned at the first refusal
        bot.send(message("again?"))
        await bot.answered(chat, 2)
        await bot.idle()
        assert len(bot_api.calls_to("sendRichMessageDraft")) + \
            len(bot_api.calls_to("sendRichMessage")) == tried  # remembered per process


async def test_show_thinking_is_a_thinking_block_then_details(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, THINKING_TOML)
    fake_model.enqueue(Reply(text="The answer is 4.", reasoning="2 and 2 make 4.",
                             chunk_size=4, chunk_delay=0.02))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("2+2?"))
        await bot.answered(chat)
        await bot.idle()
        drafts = bot_api.calls_to("sendRichMessageDraft")
        assert drafts and drafts[0].get("rich_message")["blocks"][0]["type"] == "thinking"
        final = bot_api.sent(chat)[0]
        assert final.rich is not None
        details = final.rich["blocks"][0]
        assert details["type"] == "details" and details["is_open"] is False
        assert details["blocks"][0]["text"] == "2 and 2 make 4."
        assert final.rich["blocks"][1] == {"type": "paragraph", "text": "The answer is 4."}


async def test_show_thinking_without_rich_messages_is_an_expandable_quote(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    bot_api.rich = False
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url, THINKING_TOML)
    fake_model.enqueue(Reply(text="The answer is 4.", reasoning="2 and 2 make 4."))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("2+2?"))
        await bot.answered(chat)
        await bot.idle()
        html = bot_api.calls_to("sendMessage")[-1].get("text")
        assert html.startswith("<blockquote expandable><i>Thinking</i>\n2 and 2 make 4.")
        assert html.endswith("The answer is 4.")
        assert bot_api.texts(chat)[0].endswith("The answer is 4.")


async def test_a_refused_rich_message_is_sent_as_html(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text=TABLE))
    bot_api.fail("sendRichMessage", 400, "Bad Request: can't parse rich text")
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("fruit prices?"))
        await bot.answered(chat)
        await bot.idle()
        assert len(bot_api.calls_to("sendRichMessage")) == 1
        assert bot_api.calls_to("sendMessage")[0].get("parse_mode") == "HTML"
        assert len(bot_api.texts(chat)) == 1
