"""Two replicas of the real bolt app over HTTP, one PostgreSQL: what a person looks at
(``app_context_changed``) and the DM surface ``auto`` detects reach the replica that gets
the next message, because both are stored when the event arrives."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.db import create_engine, upgrade
from bots.settings import load_settings
from tests.bots.slack.conftest import SECRET, Harness, serve
from tests.bots.slack.fake_slack import TOKEN, FakeSlack
from tests.bots.slack.test_agent_view import channel_entity, context_changed, dm
from tests.fakes.model_server import FakeModelServer, Reply

pytestmark = pytest.mark.postgres


@contextlib.asynccontextmanager
async def replicas(tmp_path: Path, db_url: str,
                   model: FakeModelServer) -> AsyncIterator[tuple[FakeSlack, Harness, Harness]]:
    engine = create_engine(db_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    with FakeSlack() as slack:
        slack.users.update({"U1": "Ann", "U2": "Bob"})
        settings = load_settings({
            "CHATBRIDGE_DATABASE_URL": db_url, "CHATBRIDGE_MODEL_BASE_URL": model.openai_base,
            "CHATBRIDGE_MODEL_API_KEY": "", "CHATBRIDGE_MODEL": "qwen-plus",
            "CHATBRIDGE_RETRY_SECONDS": "1", "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET, "CHATBRIDGE_SLACK_API_URL": slack.api_url,
        }, cwd=tmp_path)  # surface = "auto": detected from the events
        async with serve(settings, slack, model) as a, serve(settings, slack, model) as b:
            yield slack, a, b


async def test_focus_sent_to_one_replica_is_read_by_the_other(
        tmp_path: Path, postgres_url: str, fake_model: FakeModelServer) -> None:
    async with replicas(tmp_path, postgres_url, fake_model) as (slack, a, b):
        slack.members.update({"C9", "C7"})
        slack.history["C9"] = [{"type": "message", "user": "U2", "text": "Ship it Friday.",
                                "ts": "3.0"}]
        slack.history["C7"] = [{"type": "message", "user": "U2", "text": "Lunch at noon.",
                                "ts": "4.0"}]
        assert await a.event(context_changed(channel_entity("C9"))) == 200
        fake_model.enqueue(Reply(text="It ships Friday."))
        root = dm("summarise this channel")
        assert await b.event(root) == 200
        await a.idle()
        await b.idle()
        [history] = slack.of("conversations.history")
        assert history.args["channel"] == "C9"
        asked = [m["content"] for m in fake_model.requests[0].json["messages"]
                 if m["role"] == "user"][-1]
        assert "Ship it Friday." in asked
        # B learned the surface from A's event: the DM is a thread root (agent_view).
        assert slack.of("chat.startStream")[0].args["thread_ts"] == root["ts"]

        # A newer focus at B; then A gets the older event again (a Slack retry): the
        # newer one stays.
        newer = context_changed(channel_entity("C7"))
        newer["event_ts"] = "1726133702.000001"
        assert await b.event(newer) == 200
        assert await a.event(context_changed(channel_entity("C9")), retry=1) == 200
        fake_model.enqueue(Reply(text="Lunch is at noon."))
        assert await a.event(dm("what is this channel about?")) == 200
        await a.idle()
        await b.idle()
        assert [c.args["channel"] for c in slack.of("conversations.history")] == ["C9", "C7"]
