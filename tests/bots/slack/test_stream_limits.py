"""Slack's limits on one streamed message: it expires after about five minutes and refuses
text past a total length (protocols-2 K.2, unconfirmed). The fake Slack server enforces
both; a long or slow answer rolls over to a new streamed message in the same thread before
either is hit, with "continued below", nothing lost or repeated, every message noted."""

from __future__ import annotations

from collections.abc import Sequence

from bots.slack.render import CONTINUED
from tests.bots.slack.conftest import Harness, HarnessFactory, mention
from tests.bots.slack.fake_slack import Message
from tests.core.tools.webserver import WebServer
from tests.fakes.model_server import Reply


def _spy_shown(h: Harness) -> list[list[str]]:
    """Every list of messages the bot noted for the turn (a spy: the real call runs)."""
    seen: list[list[str]] = []
    real = h.runtime.service.note_shown

    async def note_shown(*, platform: str, event_ids: Sequence[str],
                         refs: Sequence[str]) -> None:
        seen.append(list(refs))
        await real(platform=platform, event_ids=event_ids, refs=refs)

    h.runtime.service.note_shown = note_shown  # type: ignore[method-assign]
    return seen


def _words(parts: list[Message]) -> list[str]:
    return " ".join(m.text.removesuffix(CONTINUED) for m in parts).split()


def _assert_whole(h: Harness, text: str, thread: str) -> list[Message]:
    posted = [m for m in h.slack.posted() if m.thread_ts == thread]
    assert all(m.streamed and m.stopped for m in posted)
    assert all(m.text.endswith(CONTINUED) for m in posted[:-1])
    assert not posted[-1].text.endswith(CONTINUED)
    assert _words(posted) == text.split()  # nothing lost, nothing twice
    # Only the last part carries the feedback buttons.
    assert [bool(m.blocks) for m in posted] == [False] * (len(posted) - 1) + [True]
    return posted


async def test_a_seven_minute_answer_rolls_over_before_the_stream_expires(
        make_harness: HarnessFactory) -> None:
    # Time scaled 1:60: Slack's ~5-minute expiry is 5 s, the roll-over 4 s (240 s), and
    # the answer streams for 7 s (7 minutes).
    toml = "[slack]\nstream_max_seconds = 4\n"
    text = " ".join(f"w{i}" for i in range(140))
    async with make_harness(toml=toml) as h:
        h.slack.stream_max_seconds = 5.0
        seen = _spy_shown(h)
        h.model.enqueue(Reply(text=text, chunk_size=4, chunk_delay=0.05))
        event = mention("tell me slowly")
        assert await h.event(event) == 200
        await h.idle()
        posted = _assert_whole(h, text, event["ts"])
        assert len(posted) >= 2
        assert all(m.thread_ts == event["ts"] for m in posted)
        assert h.slack.limit_errors == []  # rolled over before the stream expired
        refs = [f"{m.channel}/{m.ts}" for m in posted]
        # Every message was noted as it appeared (a retake edits them all).
        assert seen and seen[-1] == refs[: len(seen[-1])] and len(seen[-1]) >= len(refs) - 1


async def test_a_40000_character_answer_is_streamed_whole(
        make_harness: HarnessFactory) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 15 for i in range(100)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 40_000
    toml = "[defaults]\nmax_answer_chars = 60000\n[slack]\nstream_max_chars = 10000\n"
    async with make_harness(toml=toml) as h:
        h.slack.stream_max_chars = 12_000
        h.model.enqueue(Reply(text=text, chunk_size=200))
        event = mention("write a book")
        assert await h.event(event) == 200
        await h.idle()
        posted = _assert_whole(h, text, event["ts"])
        assert len(posted) >= 4
        assert all(len(m.text) <= 10_000 for m in posted)
        assert h.slack.limit_errors == []


async def test_a_stream_slack_ends_early_goes_on_in_a_new_one(
        make_harness: HarnessFactory) -> None:
    # Slack's limits lower than the bot's (the unconfirmed numbers are wrong): the refusal
    # is answered with a new streamed message holding the rest, nothing lost.
    text = " ".join(f"word{i}" for i in range(900))
    async with make_harness() as h:
        h.slack.stream_max_chars = 2_000
        h.model.enqueue(Reply(text=text, chunk_size=40))
        event = mention("write")
        assert await h.event(event) == 200
        await h.idle()
        posted = [m for m in h.slack.posted() if m.thread_ts == event["ts"]]
        assert len(posted) >= 3
        assert all(m.streamed for m in posted)
        assert " ".join(m.text for m in posted).split() == text.split()
        assert posted[-1].blocks  # the buttons on the last part
        assert h.slack.limit_errors  # Slack did refuse: the bot went on


async def test_a_stream_idle_through_a_long_tool_call_rolls_over_in_time(
        make_harness: HarnessFactory) -> None:
    # Nothing arrives while the tool runs (2.5 s): the stream is rolled over when it
    # reaches its age (1 s), before Slack (2 s here) would end it; the tool's task goes on
    # in the next message, shown again there.
    toml = ('[defaults]\ntools = ["fetch_url"]\ntool_timeout_seconds = 2.5\n'
            '[tools.fetch_url]\nallow_hosts = ["127.0.0.1"]\n'
            '[slack]\nstream_max_seconds = 1\n')
    with WebServer() as web:
        async with make_harness(toml=toml) as h:
            h.slack.stream_max_seconds = 2.0
            url = f"{web.url}/slow"
            h.model.enqueue(Reply(text="", tool_calls=[("fetch_url", f'{{"url": "{url}"}}')]),
                            Reply(text="That page was too slow to read."))
            event = mention(f"read {url}")
            assert await h.event(event) == 200
            await h.idle()
            posted = [m for m in h.slack.posted() if m.thread_ts == event["ts"]]
            assert h.slack.limit_errors == []
            assert len(posted) >= 2 and all(m.stopped for m in posted)
            assert posted[0].text.strip() == CONTINUED.strip()  # only the task, then rolled
            tasks = [[c.get("status") for c in m.chunks if c["type"] == "task_update"]
                     for m in posted]
            assert tasks[0] == ["in_progress"] and "in_progress" in tasks[1]  # replayed
            assert tasks[-1][-1] in ("complete", "error")
            assert posted[-1].text == "That page was too slow to read."
