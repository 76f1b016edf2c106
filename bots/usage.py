"""``chatbridge usage``: turns and tokens from the database, as a table."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from bots.db import create_engine, ensure_schema, open_store
from bots.settings import Settings
from core.errors import ConfigError
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


def render(rows: list[UsageRow], by: str) -> str:
    """A plain-text table with a total line (and a note when tokens were estimated)."""
    head = (by, "turns", "failed", "prompt tokens", "completion tokens", "total tokens",
            "estimated", "tool calls")
    body = [(r.key or "-", r.turns, r.failed, r.prompt_tokens, r.completion_tokens,
             r.prompt_tokens + r.completion_tokens, r.estimated, r.tool_calls) for r in rows]
    total = ("total", *(sum(int(line[i]) for line in body) for i in range(1, len(head))))
    lines = [head, *body, total]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]

    def fmt(line: tuple[object, ...]) -> str:
        first = str(line[0]).ljust(widths[0])
        rest = (str(v).rjust(w) for v, w in zip(line[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    table = [fmt(head), *(fmt(line) for line in body), fmt(total)]
    if total[6]:
        table.append(f"estimated: the tokens of {total[6]} turn(s) are chatbridge's own count, "
                     "as the model server reported none (llama.cpp when streaming)")
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
    print(render(rows, by))
    return 0
