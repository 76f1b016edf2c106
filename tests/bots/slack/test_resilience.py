"""Side calls that fail never cost an answer; redeliveries never greet twice; a failing
stream ends in a whole answer all the same."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bots.slack.conftest import Harness, HarnessFactory, mention, message, new_ts
from tests.bots.slack.fake_slack import TEAM
from tests.bots.slack.test_events import png, user_texts
from tests.fakes.model_server import Reply


def assistant_question(text: str, thread: str, **extra: Any) -> dict[str, Any]:
    return message(text, channel="D9", channel_type="im", thread_ts=thread, user_team=TEAM,
                   **extra)


def started(thread: str) -> dict[str, Any]:
    return {"type": "assistant_thread_started", "event_ts": new_ts(), "assistant_thread": {
        "user_id": "U1", "channel_id": "D9", "thread_ts": thread,
        "context": {"channel_id": "C222", "team_id": TEAM}}}


async def test_failing_title_and_note_still_answer(harness: Harness) -> None:
    h = harness
    h.slack.refuse("assistant.threads.setTitle", "invalid_thread_ts")
    h.slack.refuse("chat.postMessage", "channel_not_found")  # the note about the archive
    pdf = h.slack.add_file("F2", "report.zip", b"PK\x03\x04", "application/zip")
    h.model.enqueue(Reply(text="Here is my answer."))
    await h.event(assistant_question("Summarize this", new_ts(), subtype="file_share",
                                     files=[pdf]))
    await h.idle()
    assert h.slack.of("assistant.threads.setTitle")
    assert len(h.model.requests) == 1
    assert h.slack.posted()[-1].text == "Here is my answer."


async def test_title_failing_with_an_http_error_still_answers(harness: Harness) -> None:
    h = harness
    h.slack.fail("assistant.threads.setTitle", status=503)
    h.model.enqueue(Reply(text="Still here."))
    await h.event(assistant_question("Hello", new_ts()))
    await h.idle()
    assert h.slack.posted()[-1].text == "Still here."


@pytest.mark.parametrize("status", [500, 0])  # an HTTP 500 page; a dropped connection
async def test_lookups_failing_still_store_and_answer(harness: Harness, status: int) -> None:
    h = harness
    h.slack.add_file("F4", "shared.png", png("blue"), "image/png")
    stub = {"id": "F4", "mode": "file_access", "file_access": "check_file_info"}
    garbled = {**h.slack.add_file("F6", "odd.png", png(), "image/png"), "size": "lots"}
    h.slack.fail("files.info", status=status, times=10)  # hang-ups are retried
    h.slack.fail("users.info", status=status, times=10)
    h.model.enqueue(Reply(text="Answered anyway."))
    await h.event(mention("what do you make of these?", subtype="file_share",
                          files=[stub, garbled]))
    await h.idle()
    assert h.slack.of("files.info"), h.slack.methods()
    assert user_texts(h)[-1].startswith("U1: what do you make of these?"), h.slack.methods()
    notes = [c.args.get("markdown_text", "") for c in h.slack.of("chat.postMessage")]
    assert any("odd.png" in n for n in notes)
    assert any("couldn't open *a file*" in n for n in notes)  # the stub files.info missed
    assert h.slack.posted()[-1].text == "Answered anyway."


async def test_thread_stays_joined_after_reset(harness: Harness) -> None:
    h = harness
    h.model.enqueue(Reply(text="Noted: 7."), Reply(text="A fresh start."))
    root = mention("remember 7")
    await h.event(root)
    await h.idle()
    await h.event(mention("reset", thread_ts=root["ts"]))
    await h.idle()
    # A follow-up without a mention in the thread the bot took part in: still answered.
    await h.event(message("what number was it?", user="U2", thread_ts=root["ts"]))
    await h.idle()
    assert len(h.model.requests) == 2
    assert user_texts(h) == ["Bob: what number was it?"]  # the new conversation
    assert h.slack.posted()[-1].text == "A fresh start."


async def test_retried_thread_start_greets_once(make_harness: HarnessFactory,
                                                db_url: str) -> None:
    async with make_harness(db_url) as h:
        thread = new_ts()
        event = started(thread)
        assert await h.event(event, event_id="EvStart") == 200
        await h.idle()
        assert await h.event(event, event_id="EvStart", retry=1) == 200
        # The same thread start under another delivery id (a second replica's copy).
        assert await h.event(event, event_id="EvStartCopy") == 200
        await h.idle()
        assert len(h.slack.of("chat.postMessage")) == 1
        assert len(h.slack.of("assistant.threads.setSuggestedPrompts")) == 1
        await h.event(started(new_ts()))  # another thread is greeted, of course
        await h.idle()
        assert len(h.slack.of("chat.postMessage")) == 2


async def test_append_stream_failure_stops_stream_and_edits(
    make_harness: HarnessFactory,
) -> None:
    async with make_harness(toml="[slack]\nstream_buffer = 1\n") as h:
        h.slack.refuse("chat.appendStream", "internal_error")
        answer = "one two three four five six"
        h.model.enqueue(Reply(text=answer, chunk_size=4, delay=0.01))
        await h.event(mention("count"))
        await h.idle()
        assert len(h.slack.of("chat.startStream")) == 1
        stops = h.slack.of("chat.stopStream")
        assert stops and stops[0].args["ts"] == h.slack.posted()[0].ts
        [shown] = h.slack.posted()
        assert shown.text == answer
        assert shown.blocks[-1]["type"] == "context_actions"  # feedback buttons came along


async def test_refused_edit_after_stream_failure_posts_the_rest(
    make_harness: HarnessFactory,
) -> None:
    async with make_harness(toml="[slack]\nstream_buffer = 1\n") as h:
        h.slack.refuse("chat.appendStream", "internal_error")
        h.slack.refuse("chat.update", "cant_update_message")
        answer = "one two three four five six"
        h.model.enqueue(Reply(text=answer, chunk_size=4, delay=0.01))
        await h.event(mention("count"))
        await h.idle()
        posted = h.slack.posted()
        assert len(posted) == 2 and posted[0].streamed and posted[0].stopped
        assert "".join(m.text for m in posted).split() == answer.split()
        assert posted[-1].blocks[-1]["type"] == "context_actions"
