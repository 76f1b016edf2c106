"""A lost PostgreSQL connection is retried: a server restart or a killed backend between
turns costs no turn (and a failed attempt was rolled back, so nothing half-commits)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bots.db import upgrade
from core.store import Store
from core.types import Author

pytestmark = pytest.mark.postgres


async def test_turn_survives_killed_connections(postgres_url: str) -> None:
    # No pool_pre_ping here: the store's own retry must cope with the dead connection.
    engine = create_async_engine(postgres_url, pool_size=2)
    killer = create_async_engine(postgres_url)
    try:
        await upgrade(engine)
        store = Store(engine)
        first = await store.begin_turn(platform="console", scope="console/r", event_id="e1",
                                       profile=None, author=Author("u"), text="one",
                                       token_count=1)
        assert first is not None
        async with killer.connect() as conn:
            killed = await conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        assert killed
        second = await store.begin_turn(platform="console", scope="console/r", event_id="e2",
                                        profile=None, author=Author("u"), text="two",
                                        token_count=1)
        assert second is not None
        assert await store.count_messages(platform="console", scope="console/r") == 2
    finally:
        await engine.dispose()
        await killer.dispose()
