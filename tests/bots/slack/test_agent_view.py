"""Slack's Agent messaging surface (``agent_view``, protocols-2 K.1) through the real bolt
app: the Messages tab's greeting once per person, every DM message a thread root, status
with loading messages, what the person looks at (``app_context_changed``) read into the
turn when asked about, and ``show_thinking``."""

from __future__ import annotations

from typing import Any

from tests.bots.slack.conftest import Harness, HarnessFactory, mention, message
from tests.bots.slack.fake_slack import TEAM
from tests.fakes.model_server import Reply

AGENT = '[slack]\nsurface = "agent"\n'


def home_opened(user: str = "U1", channel: str = "D1") -> dict[str, Any]:
    """Bolt's own test payload for the Messages tab opening (protocols-2 K.1)."""
    return {"type": "app_home_opened", "user": user, "channel": channel, "tab": "messages",
            "event_ts": "1726133700.887259"}


def context_changed(*entities: dict[str, Any], user: str = "U1") -> dict[str, Any]:
    """app_context_changed as docs.slack.dev/reference/events/app_context_changed shows it
    (``user`` and ``event_ts`` are optional in @slack/types)."""
    return {"type": "app_context_changed", "user": user, "event_ts": "1726133701.000001",
            "context": {"entities": list(entities)}}


def channel_entity(channel: str) -> dict[str, Any]:
    return {"type": "slack#/types/channel_id", "value": channel, "team_id": TEAM}


def dm(text: str, **extra: Any) -> dict[str, Any]:
    return message(text, channel="D1", channel_type="im", **extra)


def user_turns(h: Harness) -> list[list[str]]:
    """The user messages each model call saw."""
    return [[m["content"] for m in r.json["messages"] if m["role"] == "user"]
            for r in h.model.requests]


async def test_agent_dm_from_open_to_answer(make_harness: HarnessFactory,
                                            db_url: str) -> None:
    async with make_harness(db_url, toml=AGENT) as h:
        assert await h.event(home_opened()) == 200
        assert await h.event(home_opened(), retry=1) == 200  # redelivered
        assert await h.event(home_opened()) == 200  # opened again later
        await h.idle()
        [prompts] = h.slack.of("assistant.threads.setSuggestedPrompts")
        assert prompts.args["channel_id"] == "D1" and "thread_ts" not in prompts.args
        assert prompts.args["title"] == h.bot.config.greeting
        assert prompts.args["prompts"][0]["title"] == "Summarize"

        h.model.enqueue(Reply(text="First answer."), Reply(text="Second answer."),
                        Reply(text="Follow-up answer."))
        one, two = dm("first question"), dm("second question")
        assert await h.event(one) == 200
        await h.idle()
        assert await h.event(two) == 200
        await h.idle()
        assert await h.event(dm("and more?", thread_ts=one["ts"])) == 200
        await h.idle()
        # Each DM message is a thread root: the answer streams into its thread.
        starts = h.slack.of("chat.startStream")
        assert [c.args["thread_ts"] for c in starts] == [one["ts"], two["ts"], one["ts"]]
        assert [m.text for m in h.slack.posted()] == [
            "First answer.", "Second answer.", "Follow-up answer."]
        # One conversation per thread: the second root starts afresh, the reply continues.
        assert user_turns(h) == [["first question"], ["second question"],
                                 ["first question", "and more?"]]
        statuses = h.slack.of("assistant.threads.setStatus")
        assert statuses and statuses[0].args["thread_ts"] == one["ts"]
        assert statuses[0].args["loading_messages"]


async def test_auto_surface_follows_the_events(make_harness: HarnessFactory) -> None:
    async with make_harness() as h:  # surface = "auto"
        h.model.enqueue(Reply(text="top level"), Reply(text="threaded"))
        assert await h.event(dm("before")) == 200
        await h.idle()
        assert h.slack.of("chat.postMessage")[0].args.get("thread_ts") is None
        assert await h.event(home_opened()) == 200  # only agent_view sends this
        await h.idle()
        root = dm("after")
        assert await h.event(root) == 200
        await h.idle()
        assert h.slack.of("chat.startStream")[0].args["thread_ts"] == root["ts"]


async def test_assistant_surface_keeps_top_level_dms(make_harness: HarnessFactory) -> None:
    async with make_harness(toml='[slack]\nsurface = "assistant"\n') as h:
        assert await h.event(home_opened()) == 200
        assert await h.event(dm("hi")) == 200
        await h.idle()
        assert h.slack.of("chat.postMessage")[0].args.get("thread_ts") is None
        assert not h.slack.of("chat.startStream")


async def test_summarise_this_channel_reads_it(make_harness: HarnessFactory) -> None:
    async with make_harness(toml=AGENT) as h:
        h.slack.members.add("C9")
        h.slack.history["C9"] = [  # newest first, as Slack returns them
            {"type": "message", "user": "U2", "text": "Ship it on Friday.", "ts": "3.0"},
            {"type": "message", "subtype": "channel_join", "user": "U3", "text": "joined",
             "ts": "2.0"},
            {"type": "message", "user": "U1", "text": "Is the release ready?", "ts": "1.0"},
        ]
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        await h.idle()
        h.model.enqueue(Reply(text="The release ships Friday."), Reply(text="Hello!"))
        assert await h.event(dm("summarise this channel")) == 200
        await h.idle()
        [history] = h.slack.of("conversations.history")
        assert history.args["channel"] == "C9"
        [asked] = user_turns(h)[0][-1:]
        assert asked.index("Is the release ready?") < asked.index("Ship it on Friday.")
        assert "joined" not in asked and asked.endswith("summarise this channel")
        tasks = [c for m in h.slack.posted() for c in m.chunks if c["type"] == "task_update"]
        assert [(c["title"], c["status"]) for c in tasks] == [
            ("Reading the channel…", "in_progress"), ("Reading the channel…", "complete")]
        assert h.slack.posted()[0].chunks[0]["type"] == "plan_update"
        # A message not about the channel does not read it.
        assert await h.event(dm("hello")) == 200
        await h.idle()
        assert len(h.slack.of("conversations.history")) == 1


async def test_a_channel_the_bot_is_not_in_is_not_read(make_harness: HarnessFactory) -> None:
    async with make_harness(toml=AGENT) as h:
        h.slack.history["C8"] = [{"type": "message", "user": "U2", "text": "secret plans",
                                  "ts": "1.0"}]
        assert await h.event(context_changed(channel_entity("C8"))) == 200
        await h.idle()
        assert await h.event(dm("what is this channel about?")) == 200
        await h.idle()
        asked = user_turns(h)[0][-1]
        assert "secret plans" not in asked and "not a member" in asked
        tasks = [c for m in h.slack.posted() for c in m.chunks if c["type"] == "task_update"]
        assert tasks[-1]["status"] == "error"


THINKING = '[defaults]\nshow_thinking = true\n'


async def test_show_thinking_is_a_collapsed_task_not_the_answer(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=THINKING) as h:
        h.model.enqueue(Reply(text="It is 4.", reasoning="Two plus two makes four."))
        assert await h.event(mention("2+2?")) == 200
        await h.idle()
        [answer] = h.slack.posted()
        assert answer.text == "It is 4."
        thinking = [c for c in answer.chunks if c.get("id") == "thinking"]
        assert [c["status"] for c in thinking] == ["in_progress", "complete"]
        assert thinking[-1]["details"] == "Two plus two makes four."
        assert "details" not in thinking[0]  # the text goes once, whole


async def test_thinking_is_hidden_by_default(make_harness: HarnessFactory) -> None:
    async with make_harness() as h:
        h.model.enqueue(Reply(text="It is 4.", reasoning="Two plus two makes four."))
        assert await h.event(mention("2+2?")) == 200
        await h.idle()
        [answer] = h.slack.posted()
        assert answer.text == "It is 4." and not answer.chunks


async def test_show_thinking_in_a_top_level_dm_is_a_context_block(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=THINKING) as h:
        h.model.enqueue(Reply(text="It is 4.", reasoning="Two plus two makes four."))
        assert await h.event(dm("2+2?")) == 200
        await h.idle()
        [answer] = h.slack.posted()
        assert answer.text == "It is 4."
        kinds = [b["type"] for b in answer.blocks]
        assert kinds[:2] == ["context", "markdown"]
        assert "Two plus two makes four." in answer.blocks[0]["elements"][0]["text"]


async def test_a_channel_outside_the_allow_list_is_not_read(
        make_harness: HarnessFactory) -> None:
    async with make_harness(toml=AGENT + '[slack.allow]\nchannels = ["C1"]\n') as h:
        h.slack.members.add("C9")
        h.slack.history["C9"] = [{"type": "message", "user": "U2", "text": "private",
                                  "ts": "1.0"}]
        assert await h.event(context_changed(channel_entity("C9"))) == 200
        assert await h.event(dm("summarise this channel")) == 200
        await h.idle()
        assert not h.slack.of("conversations.history")
        assert "private" not in user_turns(h)[0][-1]
