"""End to end: signed Events API POSTs into the real bolt app, answers onto the fake Slack."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from PIL import Image as PILImage

from bots.slack.render import CONTINUED, LOADING
from tests.bots.slack.conftest import (
    Harness,
    HarnessFactory,
    envelope,
    mention,
    message,
    new_ts,
)
from tests.bots.slack.fake_slack import BOT_ID, BOT_USER, TEAM, TOKEN
from tests.fakes.model_server import Reply


def png(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def user_texts(h: Harness, index: int = -1) -> list[str]:
    """The user-message texts the model got in one request."""
    sent = h.model.requests[index].json["messages"]
    out = []
    for m in sent:
        if m["role"] != "user":
            continue
        content = m["content"]
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append(content)
    return out


async def test_mention_with_image_streams_answer_in_thread(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="A red rectangle.", chunk_size=4))
    file = h.slack.add_file("F1", "red.png", png(), "image/png")
    event = mention("what is this?", subtype="file_share", files=[file])
    assert await h.event(event) == 200
    await h.idle()

    downloads = h.slack.of("FILE")
    assert [c.args["path"] for c in downloads] == [f"/files-pri/{TEAM}-F1/download/red.png"]
    assert downloads[0].headers["authorization"] == f"Bearer {TOKEN}"
    request = h.model.requests[-1]
    content = request.json["messages"][-1]["content"]
    assert any(p.get("type") == "image_url"
               and p["image_url"]["url"].startswith("data:image/png;base64,") for p in content)
    assert "Ann: what is this?" in user_texts(h)[-1]  # channel threads name the author
    body = request.body.decode()
    assert TOKEN not in body and "files-pri" not in body and "127.0.0.1" not in body

    start = h.slack.of("chat.startStream")
    assert len(start) == 1
    assert start[0].args["channel"] == "C1" and start[0].args["thread_ts"] == event["ts"]
    assert start[0].args["recipient_user_id"] == "U1"
    assert start[0].args["recipient_team_id"] == TEAM
    stop = h.slack.of("chat.stopStream")
    assert len(stop) == 1
    assert stop[0].args["blocks"][0]["elements"][0]["type"] == "feedback_buttons"
    [answer] = h.slack.posted()
    assert answer.text == "A red rectangle." and answer.thread_ts == event["ts"]
    assert h.slack.of("users.info")[0].args["user"] == "U1"


async def test_dm_answers_top_level_and_remembers(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="Hello Ann!"), Reply(text="You are Ann."))
    await h.event(message("Hi, I'm Ann", channel="D1", channel_type="im"))
    await h.idle()
    await h.event(message("Who am I?", channel="D1", channel_type="im"))
    await h.idle()

    posts = h.slack.of("chat.postMessage")
    assert len(posts) == 2 and all("thread_ts" not in p.args for p in posts)
    assert not h.slack.of("chat.startStream")  # streaming needs a thread
    final = h.slack.of("chat.update")[-1].args
    assert final["blocks"][0] == {"type": "markdown", "text": "You are Ann."}
    assert final["blocks"][1]["type"] == "context_actions"
    assert user_texts(h) == ["Hi, I'm Ann", "Who am I?"]  # no author names in a DM
    assert [m.text for m in h.slack.posted()] == ["Hello Ann!", "You are Ann."]


async def test_thread_follow_up_without_mention(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="First answer."), Reply(text="Second answer."))
    root = mention("start")
    await h.event(root)
    await h.idle()
    # Bob continues the thread without mentioning the bot: answered, with both names.
    await h.event(message("and more", user="U2", thread_ts=root["ts"]))
    await h.idle()
    assert user_texts(h) == ["Ann: start", "Bob: and more"]
    # Not answered: a top-level message without a mention, and a thread the bot is not in.
    await h.event(message("chit chat"))
    other = new_ts()
    await h.event(message("reply elsewhere", thread_ts=other))
    await h.idle()
    assert len(h.model.requests) == 2
    assert [m.thread_ts for m in h.slack.posted()] == [root["ts"], root["ts"]]


async def test_assistant_thread(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="It was released in 2013."))
    thread = new_ts()
    started = {"type": "assistant_thread_started", "event_ts": new_ts(), "assistant_thread": {
        "user_id": "U1", "channel_id": "D9", "thread_ts": thread,
        "context": {"channel_id": "C222", "team_id": TEAM}}}
    assert await h.event(started) == 200
    await h.idle()
    greeting = h.slack.of("chat.postMessage")[0].args
    assert greeting["channel"] == "D9" and greeting["thread_ts"] == thread
    prompts = h.slack.of("assistant.threads.setSuggestedPrompts")[0].args
    assert prompts["thread_ts"] == thread and len(prompts["prompts"]) == 3

    changed = {**started, "type": "assistant_thread_context_changed"}
    assert await h.event(changed) == 200
    await h.idle()
    assert h.slack.of("conversations.replies")  # bolt's context store looked for it

    question = message("When was Slack released?", channel="D9", channel_type="im",
                       thread_ts=thread, user_team=TEAM)
    assert await h.event(question) == 200
    await h.idle()
    status = h.slack.of("assistant.threads.setStatus")[0].args
    assert status == {"channel_id": "D9", "thread_ts": thread, "status": "is thinking…",
                      "loading_messages": list(LOADING)}
    title = h.slack.of("assistant.threads.setTitle")[0].args
    assert title["title"] == "When was Slack released?" and title["thread_ts"] == thread
    methods = h.slack.methods()
    assert methods.index("assistant.threads.setStatus") < methods.index("chat.startStream")
    assert h.slack.posted()[-1].text == "It was released in 2013."
    assert user_texts(h) == ["When was Slack released?"]


async def test_retry_answered_once(make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url) as h:
        event = mention("once please")
        assert await h.event(event, event_id="Ev1") == 200
        await h.idle()
        for attempt in (1, 2):
            assert await h.event(event, event_id="Ev1", retry=attempt) == 200
        await h.idle()
        assert len(h.model.requests) == 1
        assert len(h.slack.of("chat.startStream")) == 1


async def test_mention_and_message_copies_answered_once(
    make_harness: HarnessFactory, db_url: str,
) -> None:
    async with make_harness(db_url) as h:
        copy = mention("hello there")
        as_message = {**copy, "type": "message", "channel_type": "channel"}
        # Both copies at once (different event ids), as Slack sends them.
        statuses = [await h.event(copy, event_id="EvA"), await h.event(as_message,
                                                                       event_id="EvB")]
        await h.idle()
        assert statuses == [200, 200]
        assert len(h.model.requests) == 1
        assert len(h.slack.posted()) == 1


async def test_signature_checks(harness: Harness) -> None:
    body = json.dumps(envelope(mention("hi")))
    status, text = await harness.post(body, secret="wrong-secret")
    assert status == 401 and "invalid request" in text
    stale = int(time.time()) - 6 * 60
    status, _ = await harness.post(body, timestamp=stale)
    assert status == 401
    status, _ = await harness.post(body, sign=False)
    assert status == 401
    await harness.idle()
    assert not harness.model.requests and not harness.slack.of("chat.startStream")


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", "\"text\"", "{\"type\": 3}",
                                  "{\"type\": \"event_callback\", \"event\": \"nope\"}",
                                  "{\"type\": \"event_callback\", \"event\": {\"type\": 7}}"])
async def test_malformed_body_is_4xx(harness: Harness, body: str) -> None:
    status, _ = await harness.post(body)
    assert 400 <= status < 500
    status, _ = await harness.post(body, sign=False)
    assert 400 <= status < 500


async def test_url_verification_and_health(harness: Harness) -> None:
    status, text = await harness.post(json.dumps(
        {"token": "t", "challenge": "abc123", "type": "url_verification"}))
    assert status == 200 and json.loads(text) == {"challenge": "abc123"}
    async with harness.session.get(harness.url + "/healthz") as resp:
        assert resp.status == 200


async def test_ignores_own_other_bots_and_edits(harness: Harness) -> None:
    h = harness
    ts = new_ts()
    events = [
        message("my own echo", user=BOT_USER, bot_id=BOT_ID, thread_ts=ts),
        message("my own DM echo", user=BOT_USER, bot_id=BOT_ID, channel="D1",
                channel_type="im"),
        message("another bot", user="U7", bot_id="BOTHER", channel="D1", channel_type="im"),
        {"type": "message", "subtype": "bot_message", "bot_id": "BOTHER", "text": "classic",
         "ts": new_ts(), "channel": "D1", "channel_type": "im"},
        {"type": "message", "subtype": "message_changed", "channel": "D1",
         "channel_type": "im", "ts": new_ts(), "hidden": True,
         "message": {"type": "message", "user": "U1", "text": "edited", "ts": ts},
         "previous_message": {"type": "message", "user": "U1", "text": "old", "ts": ts}},
        {"type": "message", "subtype": "message_deleted", "channel": "C1",
         "channel_type": "channel", "ts": new_ts(), "deleted_ts": ts, "hidden": True},
        {"type": "message", "subtype": "channel_join", "user": "U2", "text": "joined",
         "channel": "C1", "channel_type": "channel", "ts": new_ts()},
    ]
    for event in events:
        assert await h.event(event) == 200
    await h.idle()
    assert not h.model.requests
    assert not [m for m in h.slack.methods() if m.startswith(("chat.", "assistant."))]


async def test_rate_limit_is_honoured(harness: Harness) -> None:
    h = harness
    h.slack.rate_limit("chat.startStream", retry_after=1)
    h.slack.rate_limit("users.info", retry_after=1)
    h.model.enqueue(Reply(text="Patience pays."))
    await h.event(mention("slowly"))
    await h.idle()
    starts = h.slack.of("chat.startStream")
    assert len(starts) == 2 and starts[1].at - starts[0].at >= 1.0
    assert len(h.slack.of("users.info")) == 2
    assert h.slack.posted()[-1].text == "Patience pays."


async def test_streaming_refused_falls_back_to_post_and_update(
    make_harness: HarnessFactory,
) -> None:
    async with make_harness(toml="[slack]\nupdate_interval = 0.2\n") as h:
        h.slack.refuse("chat.startStream", "not_allowed")
        h.model.enqueue(Reply(text="word " * 60, chunk_size=5, delay=0.01))
        event = mention("long-ish")
        await h.event(event)
        await h.idle()
        post = h.slack.of("chat.postMessage")
        assert len(post) == 1 and post[0].args["thread_ts"] == event["ts"]
        updates = h.slack.of("chat.update")
        assert 1 <= len(updates) <= 3  # 60 deltas in well under a second: edits throttled
        assert updates[-1].args["blocks"][-1]["type"] == "context_actions"
        assert h.slack.posted()[-1].text == ("word " * 60).strip()


async def test_long_answer_is_split_on_boundaries(make_harness: HarnessFactory) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 12 for i in range(6)]
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(60)) + "\n```"
    text = "\n\n".join([*paragraphs, code, "The end."])
    async with make_harness(toml="[slack]\nmax_message_chars = 400\n") as h:
        h.model.enqueue(Reply(text=text, chunk_size=17))
        await h.event(mention("write a lot"))
        await h.idle()
        posted = h.slack.posted()
        assert len(posted) > 3
        assert all(len(m.text) <= 400 for m in posted)
        assert all(m.text.count("```") % 2 == 0 for m in posted)  # each block closed
        assert all(m.stopped for m in posted)
        # Only the last part carries the feedback buttons.
        assert [bool(m.blocks) for m in posted] == [False] * (len(posted) - 1) + [True]
        def words(s: str) -> list[str]:
            return [w for w in s.split() if not w.startswith("```")]

        # Each part but the last ends with "continued below" (a stream rolled over).
        assert all(m.text.endswith(CONTINUED) for m in posted[:-1])
        assert words(" ".join(m.text.removesuffix(CONTINUED) for m in posted)) \
            == words(text)  # nothing lost
        assert paragraphs[0] in posted[0].text


async def test_feedback_click_is_stored(harness: Harness) -> None:
    h = harness
    await h.event(mention("rate me"))
    await h.idle()
    [answer] = h.slack.posted()
    payload = {
        "type": "block_actions", "user": {"id": "U2", "team_id": TEAM}, "team": {"id": TEAM},
        "api_app_id": "A0APP", "token": "t", "trigger_id": "1.2.3",
        "container": {"type": "message", "message_ts": answer.ts, "channel_id": "C1",
                      "is_ephemeral": False},
        "channel": {"id": "C1", "name": "general"},
        "message": {"type": "message", "ts": answer.ts, "bot_id": BOT_ID, "text": "x"},
        "actions": [{"type": "feedback_buttons", "action_id": "chatbridge_feedback",
                     "block_id": "b1", "value": "negative", "action_ts": "1.0"}],
    }
    status, _ = await h.form({"payload": json.dumps(payload)})
    assert status == 200
    await h.idle()
    from sqlalchemy import text

    async with h.runtime.store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT user_id, value FROM feedback"))).all()
        refs = (await conn.execute(text(
            "SELECT platform_ref FROM messages WHERE role = 'assistant'"))).all()
    assert [tuple(r) for r in rows] == [("U2", "down")]
    assert [r[0] for r in refs] == [f"C1/{answer.ts}"]


async def test_reset_in_dm_and_slash_command(harness: Harness) -> None:
    h = harness
    await h.event(message("remember 42", channel="D1", channel_type="im"))
    await h.idle()
    await h.event(message("reset", channel="D1", channel_type="im"))
    await h.idle()
    assert "new conversation" in h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    await h.event(message("what number?", channel="D1", channel_type="im"))
    await h.idle()
    assert user_texts(h) == ["what number?"]
    assert len(h.model.requests) == 2  # "reset" itself went to no model

    status, text = await h.form({
        "command": "/chatbridge-reset", "text": "", "team_id": TEAM, "channel_id": "D1",
        "user_id": "U1", "response_url": h.slack.url + "/hooks", "trigger_id": "1.2",
        "token": "t",
    })
    assert status == 200 and "new conversation" in text
    await h.idle()  # the reset runs after the ack, in the background
    await h.event(message("fresh?", channel="D1", channel_type="im"))
    await h.idle()
    assert user_texts(h) == ["fresh?"]

    status, text = await h.form({
        "command": "/chatbridge-reset", "text": "", "team_id": TEAM, "channel_id": "C1",
        "user_id": "U1", "response_url": h.slack.url + "/hooks", "trigger_id": "1.2",
        "token": "t",
    })
    assert status == 200 and "thread" in text


async def test_reset_and_help_in_channel_thread(harness: Harness) -> None:
    h = harness
    root = mention("remember 7")
    await h.event(root)
    await h.idle()
    reset = mention("reset", thread_ts=root["ts"])
    await h.event(reset)
    await h.event({**reset, "type": "message", "channel_type": "channel"})  # its 2nd copy
    await h.idle()
    notes = [c.args["markdown_text"] for c in h.slack.of("chat.postMessage")]
    assert len([n for n in notes if "new conversation" in n]) == 1
    await h.event(mention("help", thread_ts=root["ts"]))
    await h.idle()
    assert "Direct messages" in h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    await h.event(mention("what number?", thread_ts=root["ts"]))
    await h.idle()
    assert user_texts(h) == ["Ann: what number?"]


async def test_files_that_are_not_images_and_slack_connect_stubs(
    make_harness: HarnessFactory,
) -> None:
    async with make_harness(toml="[slack]\nmax_file_mb = 1\n") as h:
        pdf = h.slack.add_file("F2", "report.zip", b"PK\x03\x04 ...", "application/zip")
        big = h.slack.add_file("F3", "huge.png", png(), "image/png")
        big["size"] = 3 * 1024 * 1024
        h.slack.add_file("F4", "shared.png", png("blue"), "image/png")
        stub = {"id": "F4", "mode": "file_access", "file_access": "check_file_info"}
        h.model.enqueue(Reply(text="I see a blue image."))
        event = message("look", channel="D1", channel_type="im", subtype="file_share",
                        files=[pdf, big, stub])
        await h.event(event)
        await h.idle()
        assert [c.args["file"] for c in h.slack.of("files.info")] == ["F4"]
        assert [c.args["path"] for c in h.slack.of("FILE")] == \
            [f"/files-pri/{TEAM}-F4/download/shared.png"]
        notes = [c.args.get("markdown_text", "") for c in h.slack.of("chat.postMessage")]
        assert any("report.zip" in n and "only read" in n for n in notes)
        assert any("huge.png" in n for n in notes)
        sent = h.model.requests[-1].json["messages"][-1]["content"]
        texts = " ".join(p.get("text", "") for p in sent if p["type"] == "text")
        assert "report.zip" in texts and "huge.png" in texts
        assert sum(p["type"] == "image_url" for p in sent) == 1


async def test_model_failure_is_explained_in_thread(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(kind="error", status=401))
    event = mention("hello?")
    await h.event(event)
    await h.idle()
    [shown] = h.slack.posted()
    assert shown.thread_ts == event["ts"]
    assert shown.text.startswith(":warning:") and len(shown.text) > 20


async def test_ack_does_not_wait_for_the_model(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="slow answer", delay=2.0))
    began = time.monotonic()
    assert await h.event(mention("take your time")) == 200
    assert time.monotonic() - began < 1.0
    await asyncio.sleep(0.2)
    assert h.bot.runtime.inbox.running == 1  # the turn runs after the acknowledgement
    await h.idle()
    assert h.slack.posted()[-1].text == "slow answer"


async def test_reset_with_words_after_it_gets_a_hint(harness: Harness) -> None:
    h = harness
    await h.event(message("/reset now", channel="D1", channel_type="im"))
    await h.idle()
    assert "take nothing after them" in h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    await h.event(message("/reset", channel="D1", channel_type="im"))
    await h.idle()
    assert "new conversation" in h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    status, text = await h.form({
        "command": "/chatbridge-reset", "text": "now", "team_id": TEAM, "channel_id": "D1",
        "user_id": "U1", "response_url": h.slack.url + "/hooks", "trigger_id": "1.2",
        "token": "t",
    })
    assert status == 200 and "takes nothing after it" in text
    assert h.model.requests == []


async def test_summary_and_compact_words(harness: Harness) -> None:
    h = harness
    await h.event(message("FACT: the budget is 300 euros", channel="D1", channel_type="im"))
    await h.idle()
    await h.event(message("compact", channel="D1", channel_type="im"))
    await h.idle()
    assert "Compacted" in h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    await h.event(message("summary", channel="D1", channel_type="im"))
    await h.idle()
    shown = h.slack.of("chat.postMessage")[-1].args["markdown_text"]
    assert "FACT: the budget is 300 euros" in shown
    await h.event(message("what is the budget?", channel="D1", channel_type="im"))
    await h.idle()
    turn = [r.json for r in h.model.requests if r.json and "running summary" not in
            str(r.json["messages"][0]["content"])][-1]
    assert "FACT: the budget is 300 euros" in turn["messages"][0]["content"]
    assert [m["role"] for m in turn["messages"]] == ["system", "user"]
