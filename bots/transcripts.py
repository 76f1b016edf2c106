"""``chatbridge export`` (transcripts) and ``chatbridge handoffs`` (open handoffs, age)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from bots.db import create_engine, ensure_schema, open_store
from bots.settings import Settings
from core.errors import ConfigError
from core.export import load_transcripts, to_jsonl, to_markdown
from core.handoff import Handoffs
from core.store import Store

__all__ = ["run_export", "run_handoffs"]
T = TypeVar("T")


async def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url)
    try:
        await ensure_schema(engine)
        store = open_store(engine)
        try:
            return await work(store)
        finally:
            store.close()
    finally:
        await engine.dispose()


async def run_export(settings: Settings, *, conversation: int | None, scope: str | None,
                     user: str | None, fmt: str) -> int:
    """Print the selected conversations; exit 1 when none matched."""
    try:
        transcripts = await _with_store(settings, lambda store: load_transcripts(
            store, conversation=conversation, scope=scope, user=user))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not transcripts:
        print("no conversation matched")
        return 1
    print(to_markdown(transcripts) if fmt == "md" else to_jsonl(transcripts), end="")
    return 0


def age(delta: timedelta) -> str:
    """``3d 4h``, ``2h 5m``, ``7m``."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins}m" if hours else f"{mins}m"


async def run_handoffs(settings: Settings) -> int:
    """List the open handoffs with their age."""
    found = await _with_store(settings, lambda store: Handoffs(store).open_handoffs())
    print(f"{len(found)} open handoff{'' if len(found) == 1 else 's'}")
    if found:
        print(f"{'id':>5}  {'age':>7}  {'idle':>7}  {'customer':<32}  {'staff':<24}  reason")
    for h in found:
        idle = age(h.age() - (h.last_activity_at - h.opened_at))
        print(f"{h.id:>5}  {age(h.age()):>7}  {idle:>7}  {h.platform + ':' + h.scope:<32}  "
              f"{h.staff:<24}  {h.reason}")
    return 0
