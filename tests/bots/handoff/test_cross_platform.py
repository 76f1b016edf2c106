"""Human handoff end to end: the real Telegram and Slack adapters, each in its own runtime
(two processes' worth) on one database, against the fake Bot API, fake Slack and the
loopback model. A Telegram customer is served from a Slack staff channel and back; a Slack
customer from a Telegram group."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bots.db import create_engine, upgrade
from bots.outbox import run_outbox
from bots.settings import Settings
from core.export import load_transcripts, to_markdown
from core.outbox import Outbox
from core.relays import Relays
from tests.bots.slack.conftest import SECRET, Harness, message, new_ts, serve
from tests.bots.slack.fake_slack import TOKEN as SLACK_TOKEN
from tests.bots.slack.fake_slack import FakeSlack
from tests.bots.telegram.conftest import (
    ALICE,
    BOB,
    GROUP,
    TOML,
    Bot,
    make_settings,
    run_bot,
)
from tests.bots.telegram.conftest import message as tg_message
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

TG_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TG_TOKEN) as api:
        yield api


STAFF_SLACK = TOML + """
[profiles.default.handoff]
staff = "slack:C0STAFF"
phrases = ["human", "a person"]
"""
STAFF_TELEGRAM = TOML + f"""
[profiles.default.handoff]
staff = "telegram:{GROUP['id']}"
"""


@contextlib.asynccontextmanager
async def both(tmp_path: Path, api: FakeBotApi, model: FakeModelServer, db_url: str,
               toml: str, **env: str) -> AsyncIterator[tuple[Bot, Harness, Settings]]:
    """A Telegram bot and a Slack bot (each with both platforms' tokens) on one database."""
    with FakeSlack() as slack:
        slack.users.update({"U1": "Ann", "U2": "Dana"})
        settings = make_settings(tmp_path, api, model, db_url, toml,
                                 SLACK_BOT_TOKEN=SLACK_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                                 CHATBRIDGE_SLACK_API_URL=slack.api_url, **env)
        async with run_bot(settings, api, model) as tg, serve(settings, slack, model) as sl:
            yield tg, sl, settings


async def migrated(db_url: str) -> None:
    """A PostgreSQL database migrated first (a new SQLite one migrates itself)."""
    if not db_url.startswith("sqlite"):
        engine = create_engine(db_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()


def staff_notice(slack: FakeSlack) -> Any:
    notices = [m for m in slack.posted() if m.channel == "C0STAFF" and m.thread_ts is None]
    assert len(notices) == 1, notices
    return notices[0]


async def idle(tg: Bot, sl: Harness) -> None:
    await tg.idle()
    await sl.idle()
    await tg.settle()


async def test_telegram_customer_served_from_slack_and_back(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    async with both(tmp_path, bot_api, fake_model, sqlite_url, STAFF_SLACK) as (tg, sl, _):
        chat = ALICE["id"]
        tg.send(tg_message("Can I talk to a human please?"))
        await tg.api.wait_for(lambda: sl.slack.posted())
        await idle(tg, sl)
        assert fake_model.requests == []  # the model is not asked
        told = tg.api.texts(chat)
        assert len(told) == 1 and "person from our team" in told[0]
        notice = staff_notice(sl.slack)
        assert "asked for a person" in notice.text and "Can I talk to a human" in notice.text
        assert any(b.get("type") == "actions" for b in notice.blocks)  # the release button

        # The customer's next message goes to the staff thread; the bot stays silent.
        tg.send(tg_message("My order 42 has not arrived"))
        await tg.api.wait_for(lambda: [m for m in sl.slack.posted() if m.thread_ts])
        await idle(tg, sl)
        thread = [m for m in sl.slack.posted() if m.thread_ts == notice.ts]
        assert [m.text for m in thread] == ["Alice: My order 42 has not arrived"]
        assert len(tg.api.texts(chat)) == 1 and fake_model.requests == []

        # Staff answer in the thread: relayed to Telegram once, a redelivery included.
        reply = message("Sorry Alice, it ships today.", user="U2", channel="C0STAFF",
                        thread_ts=notice.ts)
        assert await sl.event(reply) == 200
        await tg.api.wait_for(lambda: len(tg.api.texts(chat)) >= 2)
        assert await sl.event(reply, retry=1) == 200
        await idle(tg, sl)
        assert tg.api.texts(chat)[1:] == ["Sorry Alice, it ships today."]

        # Released with the button: both sides told, and the bot answers again with the
        # staff message in the model's context.
        payload = {"type": "block_actions", "user": {"id": "U2"}, "team": {"id": "T0TEAM"},
                   "container": {"type": "message", "channel_id": "C0STAFF",
                                 "message_ts": notice.ts},
                   "actions": [{"action_id": "handoff_release", "value": "release"}]}
        status, _ = await sl.form({"payload": json.dumps(payload)})
        assert status == 200
        await tg.api.wait_for(lambda: len(tg.api.texts(chat)) >= 3)
        await idle(tg, sl)
        assert "handed the conversation back" in tg.api.texts(chat)[2]
        assert any("Released" in m.text for m in sl.slack.posted() if m.thread_ts == notice.ts)
        fake_model.enqueue(Reply(text="Glad it is sorted."))
        tg.send(tg_message("Thanks! Anything else I should know?"))
        await tg.answered(chat, 4)
        contents = json.dumps(fake_model.requests[-1].json["messages"])
        assert "[staff Dana] Sorry Alice, it ships today." in contents

        # The transcript has the customer, the staff member and the bot.
        text = to_markdown(await load_transcripts(tg.runtime.store,
                                                  scope=f"{BOT_USER['id']}/{chat}"))
        assert "**Dana** (staff)" in text and "Glad it is sorted." in text


async def test_slack_customer_served_from_a_telegram_group(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    async with both(tmp_path, bot_api, fake_model, sqlite_url, STAFF_TELEGRAM) as (tg, sl, _):
        ts = new_ts()
        await sl.event(message("I need a human", user="U1", channel="D1", channel_type="im",
                               ts=ts))
        await tg.api.wait_for(lambda: tg.api.texts(GROUP["id"]))
        await idle(tg, sl)
        assert fake_model.requests == []
        notice_text = tg.api.texts(GROUP["id"])[0]
        assert "Handoff from slack" in notice_text and "I need a human" in notice_text
        told = [m.text for m in sl.slack.posted() if m.channel == "D1"]
        assert len(told) == 1 and "person from our team" in told[0]
        notice_id = max(mid for (c, mid) in tg.api.messages if c == GROUP["id"])

        # A staff member in the group replies to the notice: relayed to the Slack DM.
        staff = tg_message("Hi Ann, Bob here. What is your order number?", chat=GROUP,
                           sender=BOB, reply_to_message=tg_message(
                               notice_text, chat=GROUP, sender=dict(BOT_USER),
                               message_id=notice_id))
        tg.send(staff)
        tg.send(staff)  # Telegram delivers it again
        await tg.api.wait_for(lambda: len([m for m in sl.slack.posted()
                                           if m.channel == "D1"]) >= 2)
        await idle(tg, sl)
        relayed = [m.text for m in sl.slack.posted() if m.channel == "D1"]
        assert relayed[1:] == ["Hi Ann, Bob here. What is your order number?"]

        # /release as a reply to the notice hands the customer back to the bot.
        tg.send(tg_message("/release", chat=GROUP, sender=BOB, reply_to_message=tg_message(
            notice_text, chat=GROUP, sender=dict(BOT_USER), message_id=notice_id)))
        await tg.api.wait_for(lambda: len([m for m in sl.slack.posted()
                                           if m.channel == "D1"]) >= 3)
        await idle(tg, sl)
        assert "handed the conversation back" in [
            m.text for m in sl.slack.posted() if m.channel == "D1"][2]


async def test_model_hands_over_with_the_tool(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    async with both(tmp_path, bot_api, fake_model, sqlite_url, STAFF_SLACK) as (tg, sl, _):
        fake_model.enqueue(
            Reply(text="", tool_calls=[("handoff_to_human",
                                        '{"reason": "Wants a refund for order 7"}')]),
            Reply(text="I've asked a colleague to help with the refund."))
        tg.send(tg_message("I want my money back for order 7"))
        await tg.api.wait_for(lambda: sl.slack.posted())
        await idle(tg, sl)
        tools = [t["function"]["name"] for t in fake_model.requests[0].json.get("tools", [])]
        assert "handoff_to_human" in tools  # offered because the profile has a handoff
        texts = tg.api.texts(ALICE["id"])
        assert texts[0] == "I've asked a colleague to help with the refund."
        assert "person from our team" in texts[1]
        notice = staff_notice(sl.slack)
        assert "Wants a refund for order 7" in notice.text
        # From now on the bot is silent; the message goes to the staff thread.
        tg.send(tg_message("How long will it take?"))
        await tg.api.wait_for(lambda: [m for m in sl.slack.posted() if m.thread_ts])
        await idle(tg, sl)
        assert len(fake_model.requests) == 2 and len(tg.api.texts(ALICE["id"])) == 2


async def test_a_refused_relay_goes_to_the_outbox(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    async with both(tmp_path, bot_api, fake_model, sqlite_url, STAFF_SLACK) as (tg, sl, _):
        tg.send(tg_message("human please"))
        await tg.api.wait_for(lambda: sl.slack.posted())
        await idle(tg, sl)
        sl.slack.refuse("chat.postMessage", "channel_not_found")
        tg.send(tg_message("Order 9 is broken"))
        outbox = Outbox(tg.runtime.store)
        await tg.api.wait_for(lambda: sl.slack.of("chat.postMessage")[1:])
        await idle(tg, sl)
        pending = await outbox.pending("slack")
        assert [p.text for p in pending] == ["Alice: Order 9 is broken"]
        relays = Relays(tg.runtime.store, owner="test")
        assert await relays.status(platform="slack", key=pending[0].event_id) == "outbox"
        # `chatbridge outbox retry` sends it where it was meant to go: the notice's thread.
        settings = sl.runtime.settings
        assert await run_outbox(settings, action="retry", platform="slack") == 0
        notice = staff_notice(sl.slack)
        assert [m.text for m in sl.slack.posted() if m.thread_ts == notice.ts] == [
            "Alice: Order 9 is broken"]


async def test_telegram_staff_answer_a_relayed_message_and_release_with_the_button(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    async with both(tmp_path, bot_api, fake_model, db_url, STAFF_TELEGRAM) as (tg, sl, _):
        group = GROUP["id"]
        await sl.event(message("I need a human", user="U1", channel="D1", channel_type="im",
                               ts=new_ts()))
        await tg.api.wait_for(lambda: tg.api.texts(group))
        await sl.event(message("It is about order 7", user="U1", channel="D1",
                               channel_type="im", ts=new_ts()))
        await tg.api.wait_for(lambda: len(tg.api.texts(group)) >= 2)
        await idle(tg, sl)
        notice, relayed = tg.api.sent(group)[:2]
        assert relayed.text == "Ann: It is about order 7" and relayed.reply_to == notice.message_id
        assert notice.reply_markup == {"inline_keyboard": [[{
            "text": "Release to the bot", "callback_data": "handoff_release"}]]}

        # Bob replies to the relayed customer message, not to the notice: still relayed.
        tg.send(tg_message("Order 7 left the warehouse today.", chat=GROUP, sender=BOB,
                           reply_to_message=tg_message(relayed.text, chat=GROUP,
                                                       sender=dict(BOT_USER),
                                                       message_id=relayed.message_id)))
        await tg.api.wait_for(lambda: len([m for m in sl.slack.posted()
                                           if m.channel == "D1"]) >= 2)
        await idle(tg, sl)
        assert [m.text for m in sl.slack.posted() if m.channel == "D1"][1:] == [
            "Order 7 left the warehouse today."]

        # The release button, pressed and its update delivered twice: released once,
        # the press answered once.
        press = tg.api.press(group, notice.message_id, "handoff_release", BOB, query_id="cq1")
        tg.api.push(dict(press))
        await tg.api.wait_for(lambda: tg.api.calls_to("answerCallbackQuery"))
        await idle(tg, sl)
        [answer] = tg.api.calls_to("answerCallbackQuery")
        assert answer.get("callback_query_id") == "cq1" and "Released" in answer.get("text")
        dm = [m.text for m in sl.slack.posted() if m.channel == "D1"]
        assert sum("handed the conversation back" in t for t in dm) == 1
        assert sum(t.startswith("Released") for t in tg.api.texts(group)) == 1


async def test_a_telegram_relay_left_by_a_dead_sender_is_sent_after_the_lease(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    async with both(tmp_path, bot_api, fake_model, db_url, STAFF_TELEGRAM,
                    CHATBRIDGE_LEASE_SECONDS="2") as (tg, sl, _):
        group = GROUP["id"]
        await sl.event(message("I need a human", user="U1", channel="D1", channel_type="im",
                               ts=new_ts()))
        await tg.api.wait_for(lambda: tg.api.texts(group))
        await idle(tg, sl)
        [notice] = tg.api.sent(group)
        # What a replica that died between its claim and Telegram's answer leaves behind.
        dead = Relays(tg.runtime.store, owner="dead:1:x")
        left = await dead.claim(platform="telegram", key="T0TEAM/D1/9.9/relay",
                                target={"chat_id": group, "reply_to": notice.message_id},
                                text="Ann: are you there?", lease=0.5)
        assert left is not None
        await tg.api.wait_for(lambda: len(tg.api.texts(group)) >= 2, within=20)
        await asyncio.sleep(2.5)  # another lease: nobody sends it again
        await idle(tg, sl)
        assert tg.api.texts(group)[1:] == ["Ann: are you there?"]
        assert tg.api.sent(group)[1].reply_to == notice.message_id
        assert await dead.status(platform="telegram", key=left.key) == "sent"
