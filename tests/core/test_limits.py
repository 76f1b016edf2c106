"""What a person is told when a limit is reached."""

from __future__ import annotations

from datetime import UTC, datetime

from core.limits import LimitHit, Rule


def test_limit_message_grammar() -> None:
    now = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    one = LimitHit(Rule("user", "minute", "turns", 1), now)
    assert one.message == ("You have reached the limit of 1 message a minute; "
                           "it resets in under a minute.")
    many = LimitHit(Rule("conversation", "day", "tokens", 20000), now)
    assert "the limit of 20,000 tokens a day; it resets at 20:00 UTC" in many.message
    assert "1 token a day" in LimitHit(Rule("user", "day", "tokens", 1), now).message
