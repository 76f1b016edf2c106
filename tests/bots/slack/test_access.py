"""``[slack.allow]``: the decision itself, its settings, and the bot keeping others out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from bots.settings import load_settings
from bots.slack.config import DENIED, SlackAllow, load_slack_config
from core.errors import ConfigError
from tests.bots.slack.conftest import Harness, HarnessFactory, mention, message, new_ts
from tests.bots.slack.fake_slack import TEAM
from tests.fakes.model_server import Reply

BASE = {"CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "CHATBRIDGE_MODEL_API_KEY": "",
        "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}


# ---------------------------------------------------------------------- the decision
def test_everyone_by_default() -> None:
    allow = SlackAllow()
    assert allow.decide(team="T1", channel="C1", user="U1", direct=False) == "answer"
    assert allow.decide(team="T1", channel="D1", user="U1", direct=True) == "answer"


@pytest.mark.parametrize(("allow", "team", "channel", "user", "direct", "expect"), [
    (SlackAllow(teams=frozenset({"T1"})), "T1", "C1", "U1", False, "answer"),
    (SlackAllow(teams=frozenset({"T1"})), "T2", "C1", "U1", False, "ignore"),
    (SlackAllow(teams=frozenset({"T1"})), "T2", "D1", "U1", True, "refuse"),
    (SlackAllow(users=frozenset({"U1"})), "T1", "C1", "U2", False, "ignore"),
    (SlackAllow(users=frozenset({"U1"})), "T1", "D2", "U2", True, "refuse"),
    (SlackAllow(users=frozenset({"U1"})), "T1", "D1", "U1", True, "answer"),
    # The channel list does not keep DMs out while dms = true (the default)...
    (SlackAllow(channels=frozenset({"C1"})), "T1", "C2", "U1", False, "ignore"),
    (SlackAllow(channels=frozenset({"C1"})), "T1", "C1", "U1", False, "answer"),
    (SlackAllow(channels=frozenset({"C1"})), "T1", "D1", "U1", True, "answer"),
    # ...with dms = false only the DMs it lists are answered.
    (SlackAllow(channels=frozenset({"C1"}), dms=False), "T1", "D1", "U1", True, "refuse"),
    (SlackAllow(channels=frozenset({"D1"}), dms=False), "T1", "D1", "U1", True, "answer"),
    (SlackAllow(dms=False), "T1", "D1", "U1", True, "refuse"),
    (SlackAllow(dms=False), "T1", "C9", "U1", False, "answer"),
    # Every list that is set must agree.
    (SlackAllow(teams=frozenset({"T1"}), channels=frozenset({"C1"}),
                users=frozenset({"U1"})), "T1", "C1", "U2", False, "ignore"),
    (SlackAllow(teams=frozenset({"T1"}), channels=frozenset({"C1"}),
                users=frozenset({"U1"})), "T1", "C1", "U1", False, "answer"),
])
def test_decision(allow: SlackAllow, team: str, channel: str, user: str, direct: bool,
                  expect: str) -> None:
    assert allow.decide(team=team, channel=channel, user=user, direct=direct) == expect
    assert allow.permits(team=team, channel=channel, user=user, direct=direct) == \
        (expect == "answer")


# ---------------------------------------------------------------------- the settings
def load(tmp_path: Path, toml: str):  # type: ignore[no-untyped-def]
    (tmp_path / "chatbridge.toml").write_text(toml)
    return load_slack_config(load_settings(BASE, cwd=tmp_path))


def test_settings(tmp_path: Path) -> None:
    assert load(tmp_path, "").allow == SlackAllow()
    assert load(tmp_path, "[slack.allow]\n").allow == SlackAllow()
    allow = load(tmp_path, """
[slack.allow]
teams = ["T1"]
channels = ["C1", " C2 "]
users = []
dms = false
""").allow
    assert allow == SlackAllow(teams=frozenset({"T1"}), channels=frozenset({"C1", "C2"}),
                               dms=False)


@pytest.mark.parametrize(("toml", "expect"), [
    ("[slack]\nallow = 1\n", r"\[slack.allow\] must be a table"),
    ("[slack.allow]\nworkspaces = [\"T1\"]\n", "unknown setting.*workspaces"),
    ("[slack.allow]\nusers = \"U1\"\n", "users must be a list"),
    ("[slack.allow]\nchannels = [1]\n", "channels must be a list"),
    ("[slack.allow]\nteams = [\"\"]\n", "teams must be a list"),
    ("[slack.allow]\ndms = \"yes\"\n", "dms must be true or false"),
])
def test_bad_settings(tmp_path: Path, toml: str, expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        load(tmp_path, toml)


# ---------------------------------------------------------------------- end to end
async def stored_messages(h: Harness) -> int:
    async with h.runtime.store.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one())


def side_effects(h: Harness) -> list[str]:
    """Web API calls other than the ones bolt and the name lookups make anyway."""
    return [m for m in h.slack.methods() if m not in ("auth.test", "users.info")]


async def test_channel_outside_the_list_is_silent(make_harness: HarnessFactory) -> None:
    async with make_harness(toml='[slack.allow]\nchannels = ["C1"]\n') as h:
        h.model.default = Reply(text="Here in C1.")
        await h.event(mention("hello?", channel="C2"))
        await h.event(message("<@x> and a plain message", channel="C2"))
        await h.idle()
        assert h.model.requests == [] and side_effects(h) == []
        assert await stored_messages(h) == 0

        await h.event(mention("hello?", channel="C1"))
        await h.idle()
        assert [m.text for m in h.slack.posted()] == ["Here in C1."]
        # DMs still pass a channel list (dms = true by default).
        await h.event(message("hi", channel="D1", channel_type="im"))
        await h.idle()
        assert len(h.model.requests) == 2


async def test_dm_from_someone_not_allowed_gets_one_refusal(
        make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url, toml='[slack.allow]\nusers = ["U1"]\n') as h:
        h.model.default = Reply(text="Hi Ann.")
        dm = message("hi, I'm Bob", user="U2", channel="D2", channel_type="im")
        await h.event(dm, event_id="EvBob")
        await h.idle()
        for attempt in (1, 2):  # Slack's retries of the same delivery
            await h.event(dm, event_id="EvBob", retry=attempt)
        await h.event(dm, event_id="EvBob2")  # and a copy on another delivery
        await h.idle()
        [refusal] = h.slack.of("chat.postMessage")
        assert refusal.args["channel"] == "D2" and refusal.args["markdown_text"] == DENIED
        assert h.model.requests == [] and await stored_messages(h) == 0
        # Commands are messages too: refused, not run.
        await h.event(message("reset", user="U2", channel="D2", channel_type="im"))
        await h.idle()
        assert len(h.slack.of("chat.postMessage")) == 2 and h.model.requests == []
        # In a channel, Bob is ignored, mention or not.
        await h.event(mention("and here?", user="U2"))
        await h.idle()
        assert len(h.slack.of("chat.postMessage")) == 2 and not h.slack.of("chat.startStream")

        await h.event(message("hi", user="U1", channel="D1", channel_type="im"))
        await h.idle()
        assert h.slack.posted()[-1].text == "Hi Ann." and len(h.model.requests) == 1


async def test_slash_command_and_assistant_thread(make_harness: HarnessFactory) -> None:
    async with make_harness(toml='[slack.allow]\nusers = ["U1"]\n') as h:
        fields = {"command": "/chatbridge-reset", "text": "", "team_id": TEAM,
                  "channel_id": "D2", "user_id": "U2", "response_url": h.slack.url + "/hooks",
                  "trigger_id": "1.2", "token": "t"}
        status, body = await h.form(fields)
        assert status == 200 and DENIED in body
        status, body = await h.form({**fields, "user_id": "U1"})
        assert status == 200 and "new conversation" in body

        thread = new_ts()
        started = {"type": "assistant_thread_started", "event_ts": new_ts(),
                   "assistant_thread": {"user_id": "U2", "channel_id": "D9",
                                        "thread_ts": thread, "context": {}}}
        await h.event(started)
        await h.event(started)
        await h.idle()
        [refusal] = h.slack.of("chat.postMessage")
        assert refusal.args["markdown_text"] == DENIED and refusal.args["thread_ts"] == thread
        assert not h.slack.of("assistant.threads.setSuggestedPrompts")

        question = message("When was Slack released?", user="U2", channel="D9",
                           channel_type="im", thread_ts=thread)
        await h.event(question)
        await h.idle()
        assert len(h.slack.of("chat.postMessage")) == 2 and h.model.requests == []
        assert not h.slack.of("assistant.threads.setStatus")


async def test_feedback_from_someone_not_allowed_is_not_stored(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml='[slack.allow]\nusers = ["U1"]\n') as h:
        await h.event(mention("rate me"))
        await h.idle()
        [answer] = h.slack.posted()
        for user, value in (("U2", "negative"), ("U1", "positive")):
            payload = {
                "type": "block_actions", "user": {"id": user, "team_id": TEAM},
                "team": {"id": TEAM}, "api_app_id": "A0APP", "token": "t",
                "trigger_id": "1.2.3",
                "container": {"type": "message", "message_ts": answer.ts,
                              "channel_id": "C1", "is_ephemeral": False},
                "channel": {"id": "C1", "name": "general"},
                "actions": [{"type": "feedback_buttons", "action_id": "chatbridge_feedback",
                             "block_id": "b1", "value": value, "action_ts": "1.0"}],
            }
            status, _ = await h.form({"payload": json.dumps(payload)})
            assert status == 200
        await h.idle()
        async with h.runtime.store.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT user_id, value FROM feedback"))).all()
        assert [tuple(r) for r in rows] == [("U1", "up")]
