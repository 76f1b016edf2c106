"""``chatbridge prune`` and ``chatbridge forget``: retention and erasure from the command line,
and the bots' periodic retention job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

from bots.db import create_engine, ensure_schema, open_store
from bots.settings import Settings
from bots.usage import parse_since
from core.errors import ConfigError
from core.profiles import Profile
from core.store import Store
from core.store.lifecycle import Removed, apply_retention, forget, prune

__all__ = ["RETENTION_INTERVAL", "retention_job", "run_forget", "run_prune"]

log = logging.getLogger(__name__)
RETENTION_INTERVAL = 3600.0  # seconds between two runs of the retention job in a bot
PLATFORMS = ("slack", "telegram", "console")


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Store]:
    engine = create_engine(settings.database_url)
    try:
        await ensure_schema(engine)
        store = open_store(engine)
        try:
            yield store
        finally:
            store.close()
    finally:
        await engine.dispose()


def _print(removed: Removed) -> None:
    for line in removed.lines():
        print(line)


async def run_prune(settings: Settings, *, older_than: str, dry_run: bool,
                    keep_summaries: bool) -> int:
    """Delete what is older than ``older_than`` (90d, 12w, a date); print what went."""
    try:
        before = parse_since(older_than)
    except ConfigError as err:
        raise ConfigError(err.user_message.replace("--since", "--older-than")) from err
    async with _store(settings) as store:
        removed = await prune(store, before=before, dry_run=dry_run,
                              keep_summaries=keep_summaries)
    print(f"older than {before:%Y-%m-%d %H:%M} UTC:")
    _print(removed)
    return 0


def parse_user(raw: str) -> tuple[str, str]:
    """``PLATFORM:ID`` → (platform, id)."""
    platform, sep, user = raw.partition(":")
    if not sep or platform not in PLATFORMS or not user.strip():
        raise ConfigError(f"--user takes PLATFORM:ID with PLATFORM one of "
                          f"{', '.join(PLATFORMS)} (e.g. slack:U012AB3CD or "
                          f"telegram:123456789), not {raw!r}")
    return platform, user.strip()


async def run_forget(settings: Settings, *, user: str) -> int:
    """Delete one person's data; print what was removed."""
    platform, user_id = parse_user(user)
    async with _store(settings) as store:
        removed = await forget(store, platform=platform, user_id=user_id)
    print(f"{platform}:{user_id}:")
    _print(removed)
    return 0


def retention_of(profiles: Mapping[str, Profile]) -> dict[str, int]:
    """profile name → retention_days, for the profiles that set one."""
    return {name: p.retention_days for name, p in profiles.items()
            if p.retention_days is not None}


async def retention_job(store: Store, profiles: Mapping[str, Profile], *,
                        interval: float = RETENTION_INTERVAL) -> None:
    """Prune each profile's messages older than its ``retention_days``, now and then every
    ``interval`` seconds, until cancelled. Several replicas may run it: deletes repeat
    harmlessly."""
    retention = retention_of(profiles)
    if not retention:
        return
    while True:
        try:
            removed = await apply_retention(store, retention, now=datetime.now(UTC))
            if removed.counts["messages"]:
                log.info("retention: %s", "; ".join(removed.lines()))
        except Exception as err:  # the database is away: try again next time
            log.warning("retention job failed: %s", type(err).__name__)
        await asyncio.sleep(interval)
