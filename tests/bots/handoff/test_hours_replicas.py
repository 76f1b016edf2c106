"""After-hours behaviour with a frozen clock, and staff replies relayed once by two
replicas on a real PostgreSQL (Slack customer, Slack staff channel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.db import create_engine, upgrade
from bots.settings import load_settings
from tests.bots.slack.conftest import SECRET, Harness, message, new_ts, serve
from tests.bots.slack.fake_slack import TOKEN, FakeSlack
from tests.fakes.model_server import FakeModelServer, Reply

HOURS = """
[profiles.default.handoff]
staff = "slack:C0STAFF"

[profiles.default.hours]
timezone = "Europe/Berlin"
open = {{ mon = "09:00-17:00", tue = "09:00-17:00" }}
after_hours = "{mode}"
"""
SUNDAY = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # Sunday 13:00 in Berlin: closed
MONDAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin: open


@contextlib.asynccontextmanager
async def replicas(tmp_path: Path, model: FakeModelServer, db_url: str, toml: str,
                   count: int = 1) -> AsyncIterator[tuple[FakeSlack, list[Harness]]]:
    if not db_url.startswith("sqlite"):
        engine = create_engine(db_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
    (tmp_path / "chatbridge.toml").write_text(toml)
    with FakeSlack() as slack:
        slack.users.update({"U1": "Ann", "U2": "Dana"})
        settings = load_settings({
            "CHATBRIDGE_DATABASE_URL": db_url, "CHATBRIDGE_MODEL_BASE_URL": model.openai_base,
            "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus",
            "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
            "CHATBRIDGE_SLACK_API_URL": slack.api_url}, cwd=tmp_path)
        async with contextlib.AsyncExitStack() as stack:
            harnesses = [await stack.enter_async_context(serve(settings, slack, model))
                         for _ in range(count)]
            yield slack, harnesses


def dm(slack: FakeSlack) -> list[str]:
    return [m.text for m in slack.posted() if m.channel == "D1"]


async def test_after_hours_handoff_takes_a_message_for_staff(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    async with replicas(tmp_path, fake_model, sqlite_url, HOURS.format(mode="handoff")) as (
            slack, [h]):
        h.bot.desk.clock = lambda: SUNDAY
        await h.event(message("Where is my parcel?", channel="D1", channel_type="im"))
        await h.idle()
        assert fake_model.requests == []
        assert "answer here (Monday 09:00 Europe/Berlin)" in dm(slack)[0]
        notice = [m for m in slack.posted() if m.channel == "C0STAFF"]
        assert len(notice) == 1 and "outside opening hours" in notice[0].text


async def test_after_hours_note_and_open_hours(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    async with replicas(tmp_path, fake_model, sqlite_url, HOURS.format(mode="note")) as (
            slack, [h]):
        h.bot.desk.clock = lambda: SUNDAY
        await h.event(message("Do you sell gift cards?", channel="D1", channel_type="im"))
        await h.idle()
        assert len(fake_model.requests) == 1  # answered, with the note
        assert any("We are closed now" in t and "Monday 09:00" in t for t in dm(slack))
        h.bot.desk.clock = lambda: MONDAY
        before = len(dm(slack))
        await h.event(message("And vouchers?", channel="D1", channel_type="im",
                              thread_ts=None))
        await h.idle()
        assert len(fake_model.requests) == 2
        assert not any("We are closed now" in t for t in dm(slack)[before:])
        assert not [m for m in slack.posted() if m.channel == "C0STAFF"]


@pytest.mark.postgres
async def test_staff_reply_relayed_once_by_two_replicas(
        tmp_path: Path, fake_model: FakeModelServer, postgres_url: str) -> None:
    async with replicas(tmp_path, fake_model, postgres_url, HOURS.format(mode="answer"),
                        count=2) as (slack, [a, b]):
        await a.event(message("I want a human", channel="D1", channel_type="im"))
        await asyncio.gather(a.idle(), b.idle())
        notice = [m for m in slack.posted() if m.channel == "C0STAFF"]
        assert len(notice) == 1
        reply = message("On it, Ann.", user="U2", channel="C0STAFF", thread_ts=notice[0].ts,
                        ts=new_ts())
        # The same event reaches both replicas (a retry landing elsewhere), twice each.
        await asyncio.gather(a.event(reply), b.event(reply, retry=1), a.event(reply, retry=2),
                             b.event(reply, retry=3))
        for _ in range(3):
            await asyncio.gather(a.idle(), b.idle())
            await asyncio.sleep(0.2)
        assert dm(slack).count("On it, Ann.") == 1
        # The customer's next message is relayed to the thread once, too.
        follow = message("Thanks!", channel="D1", channel_type="im", ts=new_ts())
        await asyncio.gather(a.event(follow), b.event(follow, retry=1))
        for _ in range(3):
            await asyncio.gather(a.idle(), b.idle())
            await asyncio.sleep(0.2)
        thread = [m.text for m in slack.posted() if m.thread_ts == notice[0].ts]
        assert thread.count("Ann: Thanks!") == 1
        assert fake_model.requests == []


async def test_auto_reply_channel_answers_customers_not_staff(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    toml = '[slack]\nauto_reply_channels = ["C0SUPPORT"]\n'
    async with replicas(tmp_path, fake_model, sqlite_url, toml) as (slack, [h]):
        fake_model.enqueue(Reply(text="We ship in 2 days."), Reply(text="Yes, worldwide."))
        top = new_ts()
        await h.event(message("How fast do you ship?", channel="C0SUPPORT", ts=top))
        await h.idle()
        answers = [m for m in slack.posted() if m.channel == "C0SUPPORT"]
        assert [(m.text, m.thread_ts) for m in answers] == [("We ship in 2 days.", top)]
        # Staff (another person) writing in the customer's thread: not answered.
        await h.event(message("I'll add tracking details.", user="U2", channel="C0SUPPORT",
                              thread_ts=top))
        await h.idle()
        assert len(fake_model.requests) == 1
        # The customer again in their thread: answered without a mention.
        await h.event(message("To Canada too?", user="U1", channel="C0SUPPORT",
                              thread_ts=top))
        await h.idle()
        assert len(fake_model.requests) == 2
        # Other channels still need a mention.
        await h.event(message("Hello?", channel="C0OTHER"))
        await h.idle()
        assert len(fake_model.requests) == 2


async def test_idle_handoff_released_with_a_note_to_both_sides(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    async with replicas(tmp_path, fake_model, sqlite_url, HOURS.format(mode="answer")) as (
            slack, [h]):
        await h.event(message("a person please", channel="D1", channel_type="im"))
        await h.idle()
        assert len(await h.bot.desk.handoffs.open_handoffs()) == 1
        assert await h.bot.desk.sweep() == 0  # not idle yet
        h.bot.desk.clock = lambda: datetime.now(UTC) + timedelta(hours=25)
        assert await h.bot.desk.sweep() == 1
        assert await h.bot.desk.sweep() == 0  # released once
        assert await h.bot.desk.handoffs.open_handoffs() == []
        assert "not written here for a while" in dm(slack)[-1]
        notice = next(m for m in slack.posted() if m.channel == "C0STAFF" and not m.thread_ts)
        assert any("no activity" in m.text for m in slack.posted()
                   if m.thread_ts == notice.ts)


async def test_handed_over_after_failed_turns_in_a_row(
        tmp_path: Path, fake_model: FakeModelServer, sqlite_url: str) -> None:
    async with replicas(tmp_path, fake_model, sqlite_url, HOURS.format(mode="answer")) as (
            slack, [h]):
        fake_model.enqueue(Reply(kind="error", status=400), Reply(kind="error", status=400))
        for text in ("first try", "second try"):
            await h.event(message(text, channel="D1", channel_type="im", ts=new_ts()))
            await h.idle()
        notice = [m for m in slack.posted() if m.channel == "C0STAFF"]
        assert len(notice) == 1 and "could not answer 2 times" in notice[0].text
        assert "person from our team" in dm(slack)[-1]
