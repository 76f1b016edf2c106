"""Review: a claim handed back at shutdown (or retaken after a crash) must not apply its
``reset`` a second time: the message that followed it was already stored in the new
conversation, and resetting again would leave the model without the question."""

from __future__ import annotations

import asyncio

from core.inbox import Inbox
from tests.bots.slack.conftest import Harness, message
from tests.bots.slack.test_events import user_texts
from tests.fakes.model_server import Reply


def dm(text: str) -> dict[str, object]:
    return message(text, channel="D1", channel_type="im")


async def test_reset_handed_back_with_the_next_message_is_not_applied_twice(
    harness: Harness,
) -> None:
    h = harness
    h.model.enqueue(Reply(text="first answer", delay=1.0),
                    Reply(text="never finished", delay=30), Reply(text="answer to two"))
    assert await h.event(dm("one")) == 200
    async with asyncio.timeout(5):
        while len(h.model.requests) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await h.event(dm("reset")) == 200
    assert await h.event(dm("two")) == 200
    async with asyncio.timeout(5):  # the reset ran; "two" is being answered
        while len(h.model.requests) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert user_texts(h) == ["two"]
    await h.runtime.inbox.stop(0)  # SIGTERM with no grace left: the claim goes back
    other = Inbox(h.runtime.store, lease_seconds=5, poll_seconds=0.05)
    other.register("slack", h.bot._process)
    other.start()
    try:
        async with asyncio.timeout(10):
            while len(h.model.requests) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await other.wait_idle()
    finally:
        await other.stop(5)
    assert user_texts(h) == ["two"]
    resets = [m.text for m in h.slack.posted() if m.text.startswith("Done:")]
    assert len(resets) == 1
