"""Business hours (core.hours) with a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import ConfigError
from core.hours import parse_hours

SHOP = {"timezone": "Europe/Berlin", "open": {"mon": "09:00-18:00", "sat": ["10:00-12:00",
                                                                            "13:00-14:00"]},
        "closed": ["2026-12-28"], "after_hours": "note"}


def test_open_and_closed_times() -> None:
    hours = parse_hours(SHOP, "profile 'shop'")
    # Monday 2026-12-07 09:30 in Berlin is 08:30 UTC (winter time).
    assert hours.is_open(datetime(2026, 12, 7, 8, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 12, 7, 7, 59, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 12, 7, 17, 0, tzinfo=UTC))  # 18:00 local
    assert not hours.is_open(datetime(2026, 12, 8, 10, 0, tzinfo=UTC))  # Tuesday: closed
    assert not hours.is_open(datetime(2026, 12, 12, 11, 30, tzinfo=UTC))  # Sat lunch break
    assert hours.is_open(datetime(2026, 12, 12, 12, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2026, 12, 28, 10, 0, tzinfo=UTC))  # a closed Monday
    nxt = hours.next_open(datetime(2026, 12, 26, 20, 0, tzinfo=UTC))  # Saturday night
    assert nxt is not None and nxt.isoformat() == "2027-01-02T10:00:00+01:00"
    assert "Saturday 10:00 Europe/Berlin" in hours.closed_note(
        datetime(2026, 12, 26, 20, 0, tzinfo=UTC))
    assert hours.after_hours == "note"


def test_no_hours_is_always_open() -> None:
    hours = parse_hours(None, "p")
    assert hours.is_open() and hours.after_hours == "answer" and hours.when_open() == ""


@pytest.mark.parametrize("bad", [
    {"timezone": "Mars/Olympus"}, {"open": {"monday": "09:00-18:00"}},
    {"open": {"mon": "18:00-09:00"}}, {"open": {"mon": "9 to 5"}},
    {"closed": ["christmas"]}, {"after_hours": "ignore"}, {"holidays": []},
])
def test_bad_hours_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        parse_hours(bad, "profile 'shop'")
