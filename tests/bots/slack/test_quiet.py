"""Start-up and events we do not answer leave no warnings in the log (noise hides real faults)."""

from __future__ import annotations

import logging

import pytest

from tests.bots.slack.conftest import HarnessFactory, new_ts
from tests.bots.slack.fake_slack import TOKEN


async def test_no_token_warning_at_start_when_the_token_is_in_the_environment(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)  # as `chatbridge slack` is usually run
    caplog.set_level(logging.DEBUG)
    async with make_harness():
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warnings if "will be unused" in m], warnings


@pytest.mark.parametrize("event", [
    {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"},
    {"type": "reaction_added", "user": "U1", "reaction": "thumbsup",
     "item": {"type": "message", "channel": "C1", "ts": "1.000100"}, "event_ts": "2.0"},
    {"type": "member_joined_channel", "user": "U2", "channel": "C1"},
])
async def test_events_we_do_not_handle_are_acknowledged_quietly(
    make_harness: HarnessFactory, caplog: pytest.LogCaptureFixture, event: dict[str, str],
) -> None:
    async with make_harness() as h:
        caplog.set_level(logging.WARNING)
        caplog.clear()
        assert await h.event({**event, "event_ts": new_ts()}) == 200
        await h.idle()
        assert h.model.requests == []
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []
