"""Migrations from a blank database, up and down, on SQLite and PostgreSQL; no drift."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from bots import db
from core.knowledge.models import schema_filter
from core.store.models import Base

TABLES = {"conversations", "messages", "attachments", "message_attachments", "inbound_events",
          "feedback", "scope_settings", "usage_counters", "conversation_memory", "kb_bases",
          "kb_documents", "kb_chunks", "message_sources"}


def test_head_constant_matches_scripts() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == db.HEAD


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_up_down_up_from_blank(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        assert await db.current(engine) is None
        await db.upgrade(engine)
        assert await db.current(engine) == db.HEAD
        assert TABLES <= await _tables(engine)
        if db_url.startswith("sqlite"):
            assert "kb_chunks_fts" in await _tables(engine)
        await db.downgrade(engine, "base")
        assert not (TABLES | {"kb_chunks_fts"}) & await _tables(engine)
        await db.upgrade(engine)
        assert await db.current(engine) == db.HEAD
    finally:
        await engine.dispose()


async def test_no_drift_between_models_and_migrations(engine: AsyncEngine) -> None:
    def diff(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                      "include_name": schema_filter})
        return list(compare_metadata(ctx, Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_sqlite_is_migrated_on_first_use(sqlite_url: str) -> None:
    engine = db.create_engine(sqlite_url)
    try:
        await db.ensure_schema(engine)
        assert await db.current(engine) == db.HEAD
        await db.ensure_schema(engine)  # a second start changes nothing
    finally:
        await engine.dispose()


async def test_postgres_asks_for_upgrade(postgres_url: str) -> None:
    import pytest

    from core.errors import ConfigError

    engine = db.create_engine(postgres_url)
    try:
        with pytest.raises(ConfigError, match="chatbridge db upgrade"):
            await db.ensure_schema(engine)
    finally:
        await engine.dispose()
