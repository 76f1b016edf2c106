"""The Stop button of streamed group answers (groups have no drafts): the real PTB bot
against the fake Bot API, the real core, the fake model streaming slowly. A press is a
callback_query; it stops the turn where it runs (this replica or another), what was
written is kept and stored as partial, the button goes when the answer ends, and the
query is answered once however often the update comes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import text

from tests.bots.telegram.conftest import (
    ALICE,
    BOB,
    GROUP,
    make_settings,
    mention,
    run_bot,
    update,
)
from tests.bots.telegram.fake_bot_api import FakeBotApi, Sent
from tests.bots.telegram.test_signals import LONG, _again, _taken
from tests.bots.telegram.test_webhook import migrated, post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply

CHAT = GROUP["id"]


async def _rows(runtime: object, sql: str) -> list[tuple[object, ...]]:
    async with runtime.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(r) for r in await conn.execute(text(sql))]


def _streaming(api: FakeBotApi) -> Sent | None:
    """The answer's message once it shows some text and its Stop button."""
    return next((m for m in api.sent(CHAT) if m.reply_markup and len(m.text) > 80), None)


async def test_stop_pressed_in_a_group_keeps_and_stores_what_was_written(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.03))  # ~10 s in all
    async with run_bot(settings, bot_api, fake_model) as bot:
        asked = mention("tell me a long story", **{"from": ALICE})
        bot.send(asked)
        shown = await bot_api.wait_for(lambda: _streaming(bot_api))
        [[button]] = shown.reply_markup["inline_keyboard"]
        assert button["text"].endswith("Stop")
        assert button["callback_data"] == f"stop:{asked['message_id']}:{ALICE['id']}"
        pressed = time.monotonic()
        press = bot_api.press_button(CHAT, shown.message_id, ALICE)
        await bot_api.wait_for(lambda: fake_model.hangups, within=5)
        assert fake_model.hangups[0] - pressed < 1.0  # the model stream closed at once
        await bot.idle()
        await bot.settle()
        [answer] = bot_api.sent(CHAT)
        assert answer.text.endswith("(Stopped.)") and answer.reply_markup is None
        kept = answer.text.removesuffix("(Stopped.)").strip()
        assert 80 < len(kept) < len(LONG.strip()) / 2 and LONG.startswith(kept)
        rows = await _rows(bot.runtime, "SELECT role, status, text, error FROM messages "
                                        "ORDER BY id")
        assert [(r[0], r[1]) for r in rows] == [("user", "ok"), ("assistant", "partial")]
        assert rows[1][2].strip() == kept and rows[1][3] == "stopped by the person"
        # The query is answered once, also when the same update comes again.
        await _taken(bot_api, bot_api.push(_again(press)))
        [answered] = bot_api.calls_to("answerCallbackQuery")
        assert answered.get("callback_query_id") == press["callback_query"]["id"]
        assert answered.get("text") == "Stopping the answer."
        assert len(bot_api.sent(CHAT)) == 1


async def test_only_the_asker_stops_and_a_finished_answer_loses_its_button(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        sqlite_url: str) -> None:
    settings = make_settings(tmp_path, bot_api, fake_model, sqlite_url)
    fake_model.enqueue(Reply(text=LONG[:1200], chunk_size=8, chunk_delay=0.01))
    async with run_bot(settings, bot_api, fake_model) as bot:
        bot.send(mention("a story please", **{"from": ALICE}))
        shown = await bot_api.wait_for(lambda: _streaming(bot_api))
        await _taken(bot_api, bot_api.press_button(CHAT, shown.message_id, BOB))
        await bot.idle()
        await bot.settle()
        [answer] = bot_api.sent(CHAT)
        assert answer.text.strip() == LONG[:1200].strip()  # not stopped by Bob
        assert answer.reply_markup is None  # the finished answer has no button
        [answered] = bot_api.calls_to("answerCallbackQuery")
        assert answered.get("text") == "Only the person who asked can stop this answer."
        assert not fake_model.hangups


async def test_a_stop_pressed_at_another_replica_stops_the_turn(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    port_a, settings = webhook_settings(tmp_path, bot_api, fake_model, db_url)
    port_b, _ = webhook_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.03))
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port_a) as a, \
            run_bot(settings, bot_api, fake_model, webhook=True, port=port_b) as b:
        asked = mention("tell me a long story", **{"from": ALICE})
        assert (await post(port_a, {"update_id": 700001, **update(asked)})).status_code == 200
        shown = await bot_api.wait_for(lambda: _streaming(bot_api))
        # Either replica's inbox may have claimed the turn: the press goes to the other.
        running = a if a.runtime.service.stops._turns else b
        assert running.runtime.service.stops._turns
        other = port_b if running is a else port_a
        press = bot_api.press_button(CHAT, shown.message_id, ALICE)
        pressed = time.monotonic()
        # Telegram delivers the press to the other replica, twice (a retried delivery).
        assert (await post(other, press)).status_code == 200
        assert (await post(other, press)).status_code == 200
        await bot_api.wait_for(lambda: fake_model.hangups, within=5)
        assert fake_model.hangups[0] - pressed < 1.5  # found by the running replica's poll
        await running.idle()
        await bot_api.wait_for(lambda: bot_api.sent(CHAT)[0].text.endswith("(Stopped.)"))
        await asyncio.sleep(0.3)
        assert bot_api.sent(CHAT)[0].reply_markup is None
        assert len(bot_api.calls_to("answerCallbackQuery")) == 1
        rows = await _rows(a.runtime, "SELECT status FROM messages WHERE role = 'assistant'")
        assert rows == [("partial",)]
