"""A Telegram chat answered from a knowledge base: the citation becomes a link."""

from __future__ import annotations

from pathlib import Path

from tests.bots.telegram.conftest import ALICE, TOML, make_settings, message, run_bot
from tests.bots.telegram.fake_bot_api import FakeBotApi, Sent
from tests.core.knowledge.seed import FAQ_URL, PROFILE_TOML, seed, stored_sources
from tests.fakes.model_server import FakeModelServer, Reply

SHOP_TOML = TOML.replace("[telegram]", '[telegram]\nprofile = "shop"') + PROFILE_TOML


async def test_answer_cites_the_right_passage(tmp_path: Path, bot_api: FakeBotApi,
                                              fake_model: FakeModelServer,
                                              db_url: str) -> None:
    await seed(db_url)
    toml = SHOP_TOML
    settings = make_settings(tmp_path, bot_api, fake_model, db_url, toml)
    async with run_bot(settings, bot_api, fake_model) as bot:
        fake_model.enqueue(Reply(text="We ship to **Norway** [1]."))
        bot.send(message("Do you deliver to Norway?"))
        await bot.answered(ALICE["id"])
        await bot.idle()
        system = fake_model.requests[-1].json["messages"][0]["content"]
        assert "[1] Shop FAQ — Shipping" in system
        [sent] = bot_api.sent(ALICE["id"])
        assert sent.text.startswith("We ship to Norway [1].")
        assert "Sources: [1] Shop FAQ — Shipping" in sent.text
        html = bot_api.calls_to("sendMessage")[-1].params.get("text", "") \
            if bot_api.calls_to("sendMessage") else ""
        edits = [c.params.get("text", "") for c in bot_api.calls_to("editMessageText")]
        shown = edits[-1] if edits else html
        assert f'<a href="{FAQ_URL}">Shop FAQ — Shipping</a>' in shown
    [(_, number, heading, source)] = await stored_sources(db_url)
    assert (number, heading, source) == (1, "Shop FAQ > Shipping", FAQ_URL)


async def table_answer(tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
                       db_url: str) -> Sent:
    """The one message a shop customer gets for an answer with a table and a citation."""
    await seed(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url, SHOP_TOML)
    async with run_bot(settings, bot_api, fake_model) as bot:
        fake_model.enqueue(Reply(text="Delivery [1]:\n\n| Country | Days |\n|---|---|\n"
                                      "| Norway | 3 |\n"))
        bot.send(message("How long to Norway?"))
        await bot.answered(ALICE["id"])
        await bot.idle()
        [sent] = bot_api.sent(ALICE["id"])
    return sent


async def test_a_rich_answer_keeps_its_sources_as_a_block(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    sent = await table_answer(tmp_path, bot_api, fake_model, db_url)
    assert sent.rich is not None and not bot_api.calls_to("sendMessage")
    blocks = sent.rich["blocks"]
    assert [b["type"] for b in blocks][-2:] == ["table", "paragraph"]
    assert blocks[-1]["text"][0] == {"type": "bold", "text": "Sources:"}
    assert {"type": "url", "text": "Shop FAQ — Shipping", "url": FAQ_URL} \
        in blocks[-1]["text"]
    assert sent.text.endswith("Sources: [1] Shop FAQ — Shipping")


async def test_without_rich_messages_the_sources_line_is_html(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    bot_api.rich = False  # an older Bot API server
    sent = await table_answer(tmp_path, bot_api, fake_model, sqlite_url)
    assert sent.rich is None and sent.html is not None
    assert f'<a href="{FAQ_URL}">Shop FAQ — Shipping</a>' in sent.html


async def test_i_dont_know_offers_a_person(tmp_path: Path, bot_api: FakeBotApi,
                                           fake_model: FakeModelServer, db_url: str) -> None:
    await seed(db_url)
    toml = (SHOP_TOML
            + '\n[profiles.shop.handoff]\nstaff = "telegram:-1001234567890"\n')
    settings = make_settings(tmp_path, bot_api, fake_model, db_url, toml)
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("Who won the football match yesterday?"))
        await bot.answered(ALICE["id"])
        await bot.idle()
        [sent] = bot_api.sent(ALICE["id"])
        assert sent.text.startswith("I don't know")
        assert sent.text.rstrip().endswith('Write "human" to talk to a person from our team.')
        assert fake_model.requests == []
        assert sent.reply_markup == {"inline_keyboard": [[{
            "text": "Talk to a person", "callback_data": "handoff_start"}]]}
        # Writing it hands the chat to staff: the notice goes to the staff group.
        bot.send(message("human"))
        await bot_api.wait_for(lambda: bot_api.texts(-1001234567890))
        await bot.idle()
        assert "Handoff from telegram" in bot_api.texts(-1001234567890)[0]
        # The only model call is the notice's summary (three messages by now).
        assert [r.json["messages"][0]["content"][:39] for r in fake_model.requests] == [
            "A customer conversation is being handed"]


async def test_the_talk_to_a_person_button_hands_the_chat_over(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer, db_url: str) -> None:
    await seed(db_url)
    toml = (SHOP_TOML
            + '\n[profiles.shop.handoff]\nstaff = "telegram:-1001234567890"\n')
    settings = make_settings(tmp_path, bot_api, fake_model, db_url, toml)
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(message("Who won the football match yesterday?"))
        await bot.answered(ALICE["id"])
        await bot.idle()
        [sent] = bot_api.sent(ALICE["id"])
        press = bot_api.press(ALICE["id"], sent.message_id, "handoff_start", ALICE,
                              query_id="cq7")
        bot_api.push(dict(press))  # delivered twice
        await bot_api.wait_for(lambda: bot_api.texts(-1001234567890))
        await bot_api.wait_for(lambda: bot_api.calls_to("answerCallbackQuery"))
        await bot.idle()
        await bot.settle()
        [notice] = bot_api.texts(-1001234567890)
        assert "did not know the answer" in notice
        told = bot_api.texts(ALICE["id"])[1:]
        assert len(told) == 1 and "person from our team" in told[0]
        assert len(bot_api.calls_to("answerCallbackQuery")) == 1
        assert fake_model.requests == []
