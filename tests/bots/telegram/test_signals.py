"""Stop generating (Bot API 10.3) and reactions as feedback, end to end: the real PTB
bot polling the fake Bot API, the real core, the fake model streaming slowly."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from core.stops import Stops
from tests.bots.telegram.conftest import ALICE, make_settings, message, run_bot, update
from tests.bots.telegram.fake_bot_api import BOT_USER, FakeBotApi
from tests.bots.telegram.test_webhook import free_port, migrated, post, webhook_settings
from tests.fakes.model_server import FakeModelServer, Reply

LONG = "".join(f"word{i} " for i in range(400))  # ~2,800 characters


async def _rows(bot: object, sql: str) -> list[tuple[object, ...]]:
    async with bot.runtime.store.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(r) for r in await conn.execute(text(sql))]


async def test_stop_pressed_mid_answer_keeps_and_stores_what_was_written(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.03))  # ~10 s in all
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        asked = message("tell me a long story")
        bot.send(asked)
        drafts = await bot_api.wait_for(lambda: [
            d for d in bot_api.calls_to("sendMessageDraft") if len(d.get("text") or "") > 80])
        assert drafts[0].get("can_stop") is True and drafts[0].get("keep_on_stop") is True
        assert drafts[0].get("draft_id") == asked["message_id"]
        pressed = time.monotonic()
        bot_api.press_stop(chat, drafts[0].get("draft_id"))
        await bot_api.wait_for(lambda: fake_model.hangups, within=5)
        assert fake_model.hangups[0] - pressed < 1.0  # the model stream closed at once
        texts = await bot.answered(chat)
        await bot.idle()
        assert len(texts) == 1 and texts[0].endswith("(Stopped.)")
        shown = texts[0].removesuffix("(Stopped.)").strip()
        assert 80 < len(shown) < len(LONG.strip()) / 2
        assert LONG.startswith(shown)
        rows = await _rows(bot, "SELECT role, status, text, error FROM messages ORDER BY id")
        assert [(r[0], r[1]) for r in rows] == [("user", "ok"), ("assistant", "partial")]
        assert rows[1][2].strip() == shown and rows[1][3] == "stopped by the person"
        assert len(bot_api.calls_to("sendMessage")) == 1
        # A redelivered stop, or one after the answer, changes nothing.
        await _taken(bot_api, bot_api.press_stop(chat, drafts[0].get("draft_id")))
        assert len(bot_api.texts(chat)) == 1


async def test_a_stop_recorded_at_another_replica_stops_the_turn_within_a_second(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.03))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        asked = message("tell me a long story")
        bot.send(asked)
        await bot_api.wait_for(lambda: [
            d for d in bot_api.calls_to("sendMessageDraft") if len(d.get("text") or "") > 80])
        # Another replica's registry: it does not run the turn, so only the database
        # carries the stop; the replica running it polls for it.
        elsewhere = Stops(bot.runtime.store)
        pressed = time.monotonic()
        event_id = f"{BOT_USER['id']}/{chat}/{asked['message_id']}"
        assert await elsewhere.request(platform="telegram", event_id=event_id)
        await bot_api.wait_for(lambda: fake_model.hangups, within=5)
        assert fake_model.hangups[0] - pressed < 1.5
        texts = await bot.answered(chat)
        await bot.idle()
        assert texts[0].endswith("(Stopped.)")
        rows = await _rows(bot, "SELECT status FROM messages WHERE role = 'assistant'")
        assert rows == [("partial",)]
        assert not await elsewhere.request(platform="telegram", event_id=event_id)


def _again(update: dict[str, object]) -> dict[str, object]:
    """The same update delivered once more (a retried delivery; a new update_id, as a
    poller confirmed the first)."""
    return {k: v for k, v in update.items() if k != "update_id"}


async def _taken(api: FakeBotApi, pushed: dict[str, object]) -> None:
    """Wait until the poller has handled ``pushed`` (it asks for the updates after it)."""
    await api.wait_for(lambda: any(int(c.get("offset") or 0) > int(pushed["update_id"])
                                   for c in api.calls_to("getUpdates")))


async def test_reactions_are_feedback_stored_once_under_redelivery(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    await migrated(db_url)
    settings = make_settings(tmp_path, bot_api, fake_model, db_url)
    fake_model.enqueue(Reply(text="Paris is the capital of France."))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model) as bot:
        asked = message("capital of France?")
        bot.send(asked)
        await bot.answered(chat)
        await bot.idle()
        answer = bot_api.sent(chat)[0].message_id
        feedback = "SELECT user_id, value FROM feedback"
        thumbs = bot_api.react(chat, answer, ALICE, ["👍"], date=1_800_000_000)
        await _taken(bot_api, bot_api.push(_again(thumbs)))  # delivered again
        assert await _rows(bot, feedback) == [(str(ALICE["id"]), "up")]
        # Another emoji is no feedback; a reaction on the person's own message neither.
        bot_api.react(chat, answer, ALICE, ["👍", "🔥"], old=["👍"], date=1_800_000_001)
        await _taken(bot_api, bot_api.react(chat, asked["message_id"], ALICE, ["👎"],
                                            date=1_800_000_001))
        assert await _rows(bot, feedback) == [(str(ALICE["id"]), "up")]
        await _taken(bot_api, bot_api.react(chat, answer, ALICE, ["👎"], old=["👍"],
                                            date=1_800_000_002))
        assert await _rows(bot, feedback) == [(str(ALICE["id"]), "down")]
        # The first 👍 redelivered late does not undo the newer 👎.
        await _taken(bot_api, bot_api.push(_again(thumbs)))
        assert await _rows(bot, feedback) == [(str(ALICE["id"]), "down")]
        await _taken(bot_api, bot_api.react(chat, answer, ALICE, [], old=["👎"],
                                            date=1_800_000_003))
        assert await _rows(bot, feedback) == [(str(ALICE["id"]), "none")]
        assert "message_reaction" in bot_api.calls_to("getUpdates")[0].get("allowed_updates")
        assert "stopped_message_generation" in \
            bot_api.calls_to("getUpdates")[0].get("allowed_updates")


async def test_stop_pressed_reaches_the_replica_running_the_turn(
        tmp_path: Path, bot_api: FakeBotApi, fake_model: FakeModelServer,
        db_url: str) -> None:
    """Two webhook replicas on one database: the stop is POSTed to the one that is not
    answering; the other notices it in the database and stops."""
    await migrated(db_url)
    port_a, settings = webhook_settings(tmp_path, bot_api, fake_model, db_url)
    port_b = free_port()
    fake_model.enqueue(Reply(text=LONG, chunk_size=8, chunk_delay=0.03))
    chat = ALICE["id"]
    async with run_bot(settings, bot_api, fake_model, webhook=True, port=port_a) as a, \
            run_bot(settings, bot_api, fake_model, webhook=True, port=port_b) as b:
        asked = message("tell me a long story")
        assert (await post(port_a, {"update_id": 1, **update(asked)})).status_code == 200
        await bot_api.wait_for(lambda: [
            d for d in bot_api.calls_to("sendMessageDraft") if len(d.get("text") or "") > 80])
        assert a.runtime.inbox.running + b.runtime.inbox.running == 1
        idle_port = port_b if a.runtime.inbox.running else port_a
        stop = {"update_id": 2, "stopped_message_generation": {
            "chat": {"id": chat, "type": "private", "first_name": "Alice"},
            "draft_id": asked["message_id"]}}
        pressed = time.monotonic()
        assert (await post(idle_port, stop)).status_code == 200
        await bot_api.wait_for(lambda: fake_model.hangups, within=5)
        assert fake_model.hangups[0] - pressed < 1.5
        texts = await a.answered(chat)
        await a.idle()
        await b.idle()
        assert len(texts) == 1 and texts[0].endswith("(Stopped.)")
        rows = await _rows(a, "SELECT status FROM messages WHERE role = 'assistant'")
        assert rows == [("partial",)]
