"""The ``read_channel`` tool (profiles with tools): the model decides whether a DM needs
the channel the person looks at (``app_context_changed``); the real bolt app reads it with
conversations.history or, for a thread, conversations.replies, shown as a "Reading the
channel…" task. Profiles without tools keep reading it when the message asks."""

from __future__ import annotations

import json
from typing import Any

from core.store.lifecycle import forget
from tests.bots.slack.conftest import Harness, HarnessFactory
from tests.bots.slack.fake_slack import TEAM
from tests.bots.slack.test_agent_view import AGENT, channel_entity, context_changed, dm
from tests.fakes.model_server import Reply

TOOLS = AGENT + '[defaults]\ntools = ["current_time"]\n'


def thread_entities(channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [channel_entity(channel),
            {"type": "slack#/types/thread_ts", "value": thread_ts, "team_id": TEAM}]


def tasks(h: Harness) -> list[tuple[str, str]]:
    return [(c["title"], c["status"]) for m in h.slack.posted() for c in m.chunks
            if c["type"] == "task_update"]


def offered(h: Harness, index: int = 0) -> list[str]:
    return [t["function"]["name"] for t in h.model.requests[index].json.get("tools") or []]


def tool_results(h: Harness, index: int = -1) -> list[str]:
    return [m["content"] for m in h.model.requests[index].json["messages"]
            if m["role"] == "tool"]


async def test_the_model_reads_the_focused_channel_with_the_tool(
        make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url, toml=TOOLS) as h:
        h.slack.members.add("C9")
        h.slack.history["C9"] = [  # newest first, as Slack returns them
            {"type": "message", "user": "U2", "text": "Ship it on Friday.", "ts": "3.0"},
            {"type": "message", "user": "U1", "text": "Is the release ready?", "ts": "1.0"},
        ]
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        await h.idle()
        h.model.enqueue(Reply(text="", tool_calls=[("read_channel", "{}")]),
                        Reply(text="The release ships Friday."))
        assert await h.event(dm("what did I miss?")) == 200  # no "this channel": the model
        await h.idle()
        assert "read_channel" in offered(h) and "current_time" in offered(h)
        [history] = h.slack.of("conversations.history")
        assert history.args["channel"] == "C9"
        [result] = tool_results(h)
        assert result.index("Is the release ready?") < result.index("Ship it on Friday.")
        # The person's message is stored as written (the channel is in the tool result).
        asked = [m["content"] for m in h.model.requests[-1].json["messages"]
                 if m["role"] == "user"]
        assert asked == ["what did I miss?"]
        assert tasks(h) == [("Reading the channel…", "in_progress"),
                            ("Reading the channel…", "complete")]
        assert h.slack.posted()[-1].text == "The release ships Friday."


async def test_a_focused_thread_is_read_with_conversations_replies(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=TOOLS) as h:
        h.slack.members.add("C9")
        h.slack.replies[("C9", "5.0")] = [  # oldest first, the parent first
            {"type": "message", "user": "U2", "text": "Outage in eu-west.", "ts": "5.0"},
            {"type": "message", "user": "U1", "text": "Fixed by a restart.", "ts": "6.0"},
        ]
        assert await h.event(context_changed(*thread_entities("C9", "5.0"))) == 200
        await h.idle()
        h.model.enqueue(Reply(text="", tool_calls=[("read_channel", "{}")]),
                        Reply(text="A restart fixed the outage."))
        assert await h.event(dm("summarise this thread")) == 200
        await h.idle()
        [replies] = h.slack.of("conversations.replies")
        assert replies.args["channel"] == "C9" and replies.args["ts"] == "5.0"
        assert not h.slack.of("conversations.history")
        [result] = tool_results(h)
        assert result.index("Outage in eu-west.") < result.index("Fixed by a restart.")


async def test_the_tool_says_when_the_bot_is_not_a_member(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=TOOLS) as h:
        h.slack.history["C8"] = [{"type": "message", "user": "U2", "text": "secret plans",
                                  "ts": "1.0"}]
        assert await h.event(context_changed(channel_entity("C8"))) == 200
        await h.idle()
        h.model.enqueue(Reply(text="", tool_calls=[("read_channel", "{}")]),
                        Reply(text="I am not in that channel; invite me."))
        assert await h.event(dm("summarise this channel")) == 200
        await h.idle()
        [result] = tool_results(h)
        assert "secret plans" not in result and "not a member" in result
        assert tasks(h)[-1] == ("Reading the channel…", "error")


async def test_no_focus_no_tool_and_a_message_not_about_it_reads_nothing(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=TOOLS) as h:
        h.model.enqueue(Reply(text="Hi!"))
        assert await h.event(dm("hello")) == 200
        await h.idle()
        assert offered(h) == ["current_time"]  # nothing in view: no read_channel
        h.slack.members.add("C9")
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        h.model.enqueue(Reply(text="Hello again!"))
        assert await h.event(dm("hello again")) == 200
        await h.idle()
        assert "read_channel" in offered(h, -1)
        assert not h.slack.of("conversations.history")  # the model did not ask


async def test_without_tools_the_message_still_gets_the_channel(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=AGENT) as h:
        h.slack.members.add("C9")
        h.slack.history["C9"] = [{"type": "message", "user": "U2", "text": "Ship Friday.",
                                  "ts": "3.0"}]
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        h.model.enqueue(Reply(text="Friday."))
        assert await h.event(dm("summarise this channel")) == 200
        await h.idle()
        assert "tools" not in h.model.requests[0].json
        asked = json.dumps(h.model.requests[0].json["messages"])
        assert "Ship Friday." in asked


async def test_forget_drops_what_the_person_looked_at(make_harness: HarnessFactory,
                                                      db_url: str) -> None:
    async with make_harness(db_url, toml=TOOLS) as h:
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        assert await h.event(context_changed(channel_entity("C7"), user="U2")) == 200
        assert (await h.bot.focuses.get(TEAM, "U1", None)).channel == "C9"
        await forget(h.runtime.store, platform="slack", user_id="U1")
        assert (await h.bot.focuses.get(TEAM, "U1", None)).channel == ""
        assert (await h.bot.focuses.get(TEAM, "U2", None)).channel == "C7"
