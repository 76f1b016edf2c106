"""Rate limits and daily token quotas, per person and per conversation.

Counted in SQL (``usage_counters``), so every replica sees the same numbers. Windows
are fixed: the current minute and the current UTC day. A message over a limit is still
recorded (nothing is lost); the person is told which limit it was and when it resets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from core.config import config_table
from core.errors import ConfigError

__all__ = ["LimitHit", "Limits", "Rule", "window_start"]

Period = Literal["minute", "day"]
_SPAN = {"minute": timedelta(minutes=1), "day": timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class Rule:
    """One limit: who it counts (user/conversation), over what period, turns or tokens."""

    subject: Literal["user", "conversation"]
    period: Period
    measure: Literal["turns", "tokens"]
    limit: int


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A limit was reached; ``message`` is fit to show the person."""

    rule: Rule
    resets_at: datetime

    @property
    def message(self) -> str:
        """What to tell the person."""
        who = "You have" if self.rule.subject == "user" else "This conversation has"
        what = "message" if self.rule.measure == "turns" else "token"
        if self.rule.limit != 1:
            what += "s"
        per = "a minute" if self.rule.period == "minute" else "a day"
        when = (f"at {self.resets_at:%H:%M} UTC" if self.rule.period == "day"
                else "in under a minute")
        return (f"{who} reached the limit of {self.rule.limit:,} {what} {per}; "
                f"it resets {when}.")


def window_start(period: Period, now: datetime) -> datetime:
    """The start of the fixed window ``now`` falls in."""
    if period == "minute":
        return now.replace(second=0, microsecond=0)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def window_end(period: Period, start: datetime) -> datetime:
    """When a window that began at ``start`` ends."""
    return start + _SPAN[period]


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured limits; ``None`` means unlimited (the default for all)."""

    user_turns_per_minute: int | None = None
    user_turns_per_day: int | None = None
    user_tokens_per_day: int | None = None
    conversation_turns_per_minute: int | None = None
    conversation_turns_per_day: int | None = None
    conversation_tokens_per_day: int | None = None

    def rules(self) -> tuple[Rule, ...]:
        """The limits that are set."""
        found = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                subject, measure, _, period = f.name.split("_")
                found.append(Rule(subject, period, measure, value))  # type: ignore[arg-type]
        return tuple(found)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> Limits:
        """Validate a ``[limits]`` table."""
        raw = config_table(raw, "[limits]", {f.name for f in fields(cls)})
        for name, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"[limits]: {name} must be a positive integer")
        return cls(**raw)
