"""The Slack path through the inbox: recorded before the 200, batched while a turn runs,
503 when the database cannot take an event, and replies Slack refused kept in the outbox."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bots.outbox import run_outbox
from bots.slack.app import GIVEN_UP
from bots.slack.translate import incoming_from_event
from core.outbox import Outbox
from core.store.queue import InboxStore
from tests.bots.slack.conftest import Harness, HarnessFactory, envelope, message
from tests.bots.slack.fake_slack import BOT_USER
from tests.bots.slack.test_events import user_texts
from tests.fakes.model_server import Reply


def dm(text: str) -> dict[str, object]:
    return message(text, channel="D1", channel_type="im")


async def test_messages_sent_during_a_turn_are_answered_together(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="first answer", delay=0.8), Reply(text="second answer"))
    assert await h.event(dm("one")) == 200
    while not h.model.requests:  # noqa: ASYNC110 (the fake model runs in a thread)
        await asyncio.sleep(0.02)
    assert await h.event(dm("two")) == 200
    assert await h.event(dm("three")) == 200
    await h.idle()
    assert len(h.model.requests) == 2
    assert user_texts(h, 0) == ["one"]
    assert user_texts(h, 1) == ["one", "two", "three"]
    assert [m.text for m in h.slack.posted()] == ["first answer", "second answer"]


async def test_event_is_recorded_before_the_ack(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="later", delay=1.0))
    assert await h.event(dm("remember me")) == 200
    async with h.runtime.store.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT status, scope_key, payload FROM inbound_events"))).one()
    assert row.status in ("received", "processing")
    assert "remember me" in row.payload
    await h.idle()


async def test_database_down_answers_503_and_the_retry_is_answered(
    make_harness: HarnessFactory, db_url: str
) -> None:
    async with make_harness(db_url) as h:
        async with h.runtime.store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE inbox_leases RENAME TO inbox_leases_away"))
        event = dm("are you there?")
        assert await h.event(event) == 503  # Slack will deliver it again
        async with h.runtime.store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE inbox_leases_away RENAME TO inbox_leases"))
        assert await h.event(event, retry=1) == 200
        await h.idle()
        assert len(h.model.requests) == 1
        assert len(h.slack.posted()) == 1


async def test_reply_slack_refuses_is_kept_and_retried(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    h.slack.fail("chat.postMessage", status=500, times=1)
    h.model.enqueue(Reply(text="an answer worth keeping"))
    assert await h.event(dm("hello")) == 200
    await h.idle()
    assert h.slack.posted() == []
    kept = await Outbox(h.runtime.store).pending()
    assert [(k.platform, k.text) for k in kept] == [("slack", "an answer worth keeping")]
    assert kept[0].target["channel"] == "D1"
    assert await run_outbox(h.runtime.settings, action="list", platform=None) == 0
    assert "1 pending reply" in capsys.readouterr().out
    assert await run_outbox(h.runtime.settings, action="retry", platform="slack") == 0
    assert [m.text for m in h.slack.posted()] == ["an answer worth keeping"]
    assert await Outbox(h.runtime.store).pending() == []
    assert "sent 1" in capsys.readouterr().out


async def test_message_given_up_after_too_many_attempts_is_explained(harness: Harness) -> None:
    h = harness
    msg = incoming_from_event(envelope(dm("this one kills workers")), bot_user_id=BOT_USER,
                              bot_id="B0", allow_bots=False)
    assert msg is not None
    queue = InboxStore(h.runtime.store)
    # As if five workers had died on it: not due for a moment, so no claim sees it earlier.
    assert await queue.enqueue(platform="slack", event_id=msg.event_id, scope=msg.scope,
                               payload=msg.to_payload(), delay=0.3)
    async with h.runtime.store.engine.begin() as conn:
        await conn.execute(text("UPDATE inbound_events SET attempts = 5"))
    await asyncio.sleep(0.4)
    h.runtime.inbox._wake.set()
    await h.idle()
    assert h.model.requests == []
    assert [m.text for m in h.slack.posted()] == [GIVEN_UP]
    async with h.runtime.store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT status FROM inbound_events "
                                        "WHERE scope_key IS NOT NULL"))).scalar() == "failed"


async def test_a_reply_another_retry_is_sending_is_not_sent_twice(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    outbox = Outbox(h.runtime.store)
    item = await outbox.add(platform="slack", event_id="T/D1/1.0", error="HTTP 500",
                            target={"channel": "D1", "thread_ts": None, "team": "T",
                                    "user": "U1"}, text="kept answer")
    assert await outbox.take(item)  # another `outbox retry` took it a moment ago
    assert not await outbox.take(item)
    assert await run_outbox(h.runtime.settings, action="retry", platform=None) == 0
    assert "being sent by another run" in capsys.readouterr().out
    assert h.slack.posted() == []
    await outbox.failed(item, "HTTP 500")  # that run failed: pending again
    assert await run_outbox(h.runtime.settings, action="retry", platform=None) == 0
    assert [m.text for m in h.slack.posted()] == ["kept answer"]
