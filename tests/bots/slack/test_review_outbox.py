"""Review: ``chatbridge outbox retry`` sends what it can when another platform's
credentials are missing, instead of stopping before the first reply."""

from __future__ import annotations

import pytest

from bots.outbox import run_outbox
from core.outbox import Outbox
from tests.bots.slack.conftest import Harness


async def test_retry_sends_slack_replies_when_telegram_is_not_configured(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness
    assert "TELEGRAM_BOT_TOKEN" not in h.runtime.settings.env
    outbox = Outbox(h.runtime.store)
    # The oldest pending reply is Telegram's; this process has no Telegram token.
    await outbox.add(platform="telegram", event_id="1/2/3", target={"chat_id": 2},
                     text="for telegram", error="NetworkError")
    await outbox.add(platform="slack", event_id="T1/D1/1.1",
                     target={"channel": "D1", "thread_ts": None, "team": "T1", "user": "U1"},
                     text="for slack", error="ClientError")
    assert await run_outbox(h.runtime.settings, action="retry", platform=None) == 1
    assert [m.text for m in h.slack.posted()] == ["for slack"]
    assert [p.platform for p in await outbox.pending()] == ["telegram"]
    assert "sent 1, still pending 1" in capsys.readouterr().out
