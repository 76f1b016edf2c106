"""``chatbridge usage``: turns and tokens from the database, as a table."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bots.db import create_engine, ensure_schema, open_store
from bots.settings import Settings
from core.errors import ConfigError
from core.prices import Price
from core.store import UsageRow

__all__ = ["parse_since", "render", "run_usage"]

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(raw: str, *, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` ago, or an ISO date/time."""
    now = now or datetime.now(UTC)
    match = re.fullmatch(r"(\d+)([mhdw])", raw.strip())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(raw)
    except ValueError as err:
        raise ConfigError(f"--since takes 7d, 12h, 30m, 2w or a date, not {raw!r}") from err
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class _Line:
    key: str
    turns: int = 0
    failed: int = 0
    prompt: int = 0
    completion: int = 0
    estimated: int = 0
    tool_calls: int = 0
    cached: int = 0
    created: int = 0
    cost: float = 0.0
    priced: bool = False
    unpriced: set[str] = field(default_factory=set)


def _lines(rows: list[UsageRow], prices: Mapping[str, Price]) -> list[_Line]:
    """One line per key (the store gives one row per key and model), costliest first."""
    lines: dict[str, _Line] = {}
    for r in rows:
        line = lines.setdefault(r.key, _Line(r.key))
        line.turns += r.turns
        line.failed += r.failed
        line.prompt += r.prompt_tokens
        line.completion += r.completion_tokens
        line.estimated += r.estimated
        line.tool_calls += r.tool_calls
        line.cached += r.cached_tokens
        line.created += r.cache_creation_tokens
        price = prices.get(r.model)
        if price is not None:
            line.priced = True
            line.cost += price.cost(prompt=r.prompt_tokens, completion=r.completion_tokens,
                                    cached=r.cached_tokens, created=r.cache_creation_tokens)
        elif r.prompt_tokens or r.completion_tokens:
            line.unpriced.add(r.model or "-")
    return sorted(lines.values(), key=lambda x: (-(x.prompt + x.completion), x.key))


def render(rows: list[UsageRow], by: str, prices: Mapping[str, Price] | None = None) -> str:
    """A plain-text table with a total line (and notes on estimated tokens and prices)."""
    prices = prices or {}
    head = (by, "turns", "failed", "prompt tokens", "completion tokens", "total tokens",
            "estimated", "tool calls", "cached tokens", "cache writes", "cost")
    lines = _lines(rows, prices)

    def cost(value: float, priced: bool) -> str:
        return f"{value:.6f}" if priced else "-"

    body = [(x.key or "-", x.turns, x.failed, x.prompt, x.completion, x.prompt + x.completion,
             x.estimated, x.tool_calls, x.cached, x.created, cost(x.cost, x.priced))
            for x in lines]
    unpriced = sorted(set().union(*(x.unpriced for x in lines))) if lines else []
    total = ("total", *(sum(int(line[i]) for line in body) for i in range(1, len(head) - 1)),
             cost(sum(x.cost for x in lines), any(x.priced for x in lines)))
    table_lines = [head, *body, total]
    widths = [max(len(str(line[i])) for line in table_lines) for i in range(len(head))]

    def fmt(line: tuple[object, ...]) -> str:
        first = str(line[0]).ljust(widths[0])
        rest = (str(v).rjust(w) for v, w in zip(line[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    table = [fmt(head), *(fmt(line) for line in body), fmt(total)]
    if total[6]:
        table.append(f"estimated: the tokens of {total[6]} turn(s) are chatbridge's own count, "
                     "as the model server reported none (llama.cpp when streaming)")
    if unpriced:
        table.append(f"cost: no [prices] entry for {', '.join(unpriced)}; their tokens are "
                     "not in the cost column")
    return "\n".join(table)


async def run_usage(settings: Settings, *, since: str, by: str) -> int:
    """Print the usage table."""
    start = parse_since(since)
    engine = create_engine(settings.database_url)
    try:
        await ensure_schema(engine)
        store = open_store(engine)
        try:
            rows = await store.usage(since=start, by=by)
        finally:
            store.close()
    finally:
        await engine.dispose()
    print(f"since {start:%Y-%m-%d %H:%M} UTC")
    print(render(rows, by, settings.prices))
    return 0
