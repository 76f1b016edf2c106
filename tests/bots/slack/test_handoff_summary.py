"""The staff notice's short summary, through the real Slack adapter and the loopback model:
written by the profile's summary model from the recent messages; when the model fails or
is too slow the notice goes out in time with the recent messages only."""

from __future__ import annotations

import time

from tests.bots.slack.conftest import HarnessFactory, message
from tests.fakes.model_server import Reply

TOML = """
[profiles.default]
summary_model = "qwen-flash"

[profiles.default.handoff]
staff = "slack:C0STAFF"
"""
SUMMARY = "Ann ordered a lamp (order 42) that has not arrived and wants a person to check."


def notices(h: object) -> list[str]:
    return [m.text for m in h.slack.posted()  # type: ignore[attr-defined]
            if m.channel == "C0STAFF" and m.thread_ts is None]


async def chat(h: object, *texts: str, channel: str = "D1") -> None:
    for text in texts:
        await h.event(message(text, channel=channel, channel_type="im"))  # type: ignore[attr-defined]
        await h.idle()  # type: ignore[attr-defined]


async def test_the_notice_carries_a_summary_by_the_summary_model(
        make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url, TOML) as h:
        h.model.enqueue(Reply(text="Sorry to hear that. What is the order number?"),
                        Reply(text="Thanks, I can't see its status."), Reply(text=SUMMARY))
        await chat(h, "My lamp has not arrived", "Order 42", "Can I talk to a human?")
        [notice] = notices(h)
        assert f"Summary: {SUMMARY}" in notice
        assert "Ann: Order 42" in notice.split("Recent messages:")[1]
        ask = h.model.requests[-1].json
        assert ask["model"] == "qwen-flash"
        assert "handed to a person" in ask["messages"][0]["content"]
        assert "Ann: My lamp has not arrived" in ask["messages"][1]["content"]


async def test_a_failed_or_slow_summary_does_not_hold_the_notice(
        make_harness: HarnessFactory, db_url: str) -> None:
    async with make_harness(db_url, TOML) as h:
        h.bot.desk.summary_seconds = 1.0
        h.model.enqueue(Reply(text="Hello!"), Reply(text="Sure."), Reply(kind="hang"))
        began = time.monotonic()
        await chat(h, "Hi", "I have a question", "a person please")
        [notice] = notices(h)
        assert "Summary:" not in notice and "Ann: I have a question" in notice
        assert time.monotonic() - began < 20
    async with make_harness(db_url, TOML) as h:
        h.model.enqueue(Reply(text="Hello!"), Reply(text="Sure."),
                        Reply(kind="error", status=400))
        await chat(h, "Hi", "I have a question", "a person please", channel="D2")
        [notice] = notices(h)
        assert "Summary:" not in notice and "Ann: I have a question" in notice
