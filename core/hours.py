"""Business hours: a time zone, weekly opening hours, closed dates, and what to do outside."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config import config_table
from core.errors import ConfigError

__all__ = ["AFTER_HOURS", "DAYS", "Hours", "parse_hours"]

AFTER_HOURS = ("answer", "note", "handoff")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AfterHours = Literal["answer", "note", "handoff"]
DEFAULT_NOTE = "(We are closed now; staff will read this when we open again{when}.)"
_KEYS = {"timezone", "open", "closed", "after_hours", "note"}


@dataclass(frozen=True, slots=True)
class Hours:
    """When people are there to answer; ``week[0]`` is Monday's spans (local times)."""

    timezone: str = "UTC"
    week: tuple[tuple[tuple[time, time], ...], ...] = ((),) * 7
    closed: frozenset[date] = field(default_factory=frozenset)
    after_hours: AfterHours = "answer"
    note: str = DEFAULT_NOTE
    always: bool = True  # no opening hours configured: always open

    def _local(self, now: datetime) -> datetime:
        return now.astimezone(ZoneInfo(self.timezone))

    def is_open(self, now: datetime | None = None) -> bool:
        """Whether ``now`` (aware; default: the current time) lies in opening hours."""
        if self.always:
            return True
        local = self._local(now or datetime.now(UTC))
        if local.date() in self.closed:
            return False
        at = local.time().replace(tzinfo=None)
        return any(start <= at < end for start, end in self.week[local.weekday()])

    def next_open(self, now: datetime | None = None) -> datetime | None:
        """When the next opening span starts (local time), within two weeks; ``None``
        when always open or never."""
        if self.always:
            return None
        local = self._local(now or datetime.now(UTC))
        for offset in range(15):
            day = (local + timedelta(days=offset)).date()
            if day in self.closed:
                continue
            for start, _end in sorted(self.week[day.weekday()]):
                at = datetime.combine(day, start, tzinfo=local.tzinfo)
                if at > local:
                    return at
        return None

    def when_open(self, now: datetime | None = None) -> str:
        """``" (Tuesday 09:00 Europe/Berlin)"``-like words for the next opening, or ``""``."""
        nxt = self.next_open(now)
        return "" if nxt is None else f" ({nxt:%A %H:%M} {self.timezone})"

    def closed_note(self, now: datetime | None = None) -> str:
        """The note that goes with an after-hours answer."""
        return self.note.replace("{when}", self.when_open(now))


def _clock(raw: str, where: str) -> time:
    if raw == "24:00":
        return time.max
    try:
        return time.fromisoformat(raw)
    except ValueError as err:
        raise ConfigError(f"{where}: {raw!r} is not a time like 09:00") from err


def _spans(raw: Any, where: str) -> tuple[tuple[time, time], ...]:
    items = raw if isinstance(raw, list) else [raw]
    spans = []
    for item in items:
        if not isinstance(item, str) or item.count("-") != 1:
            raise ConfigError(f"{where}: opening hours must look like \"09:00-18:00\"")
        start, end = (_clock(p.strip(), where) for p in item.split("-"))
        if not start < end:
            raise ConfigError(f"{where}: {item!r} ends before it starts")
        spans.append((start, end))
    return tuple(spans)


def parse_hours(raw: Mapping[str, Any] | None, where: str) -> Hours:
    """Validate a profile's ``[hours]`` table (``None``: always open)."""
    table = config_table(raw, f"{where} hours", _KEYS)
    if not table:
        return Hours()
    name = table.get("timezone", "UTC")
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError) as err:
        raise ConfigError(f"{where} hours: unknown timezone {name!r}") from err
    week: list[tuple[tuple[time, time], ...]] = [()] * 7
    opening = config_table(table.get("open"), f"{where} hours.open", DAYS)
    for day, spans in opening.items():
        week[DAYS.index(day)] = _spans(spans, f"{where} hours.open.{day}")
    closed: set[date] = set()
    raw_closed = table.get("closed", [])
    if not isinstance(raw_closed, list):
        raise ConfigError(f"{where} hours: closed must be a list of dates")
    for item in raw_closed:
        try:
            closed.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
        except ValueError as err:
            raise ConfigError(f"{where} hours: {item!r} is not a date like 2026-12-25") from err
    mode = table.get("after_hours", "answer")
    if mode not in AFTER_HOURS:
        raise ConfigError(f"{where} hours: after_hours must be one of {', '.join(AFTER_HOURS)}")
    note = table.get("note", DEFAULT_NOTE)
    if not isinstance(note, str) or not note.strip():
        raise ConfigError(f"{where} hours: note must be a non-empty string")
    return Hours(timezone=name, week=tuple(week), closed=frozenset(closed), after_hours=mode,
                 note=note, always=not opening)
