"""Database engine creation and Alembic migrations (``chatbridge db …``).

A new SQLite database is migrated automatically on first use; PostgreSQL is
migrated explicitly with ``chatbridge db upgrade``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import ConfigError, StoreError
from core.store import Store

__all__ = [
    "HEAD", "create_engine", "current", "downgrade", "ensure_schema", "open_store", "upgrade",
]

HEAD = "0011"  # newest revision in migrations/versions; a test keeps them equal
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_ms: int = 5000) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


def _sqlite_pragmas_no_wait(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record, busy_ms=0)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``, tuned for SQLite (WAL) or pooled for PostgreSQL."""
    try:
        if url.startswith("sqlite"):
            engine = create_async_engine(url)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            return engine
        # Turns hold a connection only for a transaction at a time; 20 kept open covers
        # the inbox's claims and the acknowledgements without reconnecting for each, and
        # 3 replicas at 30 stay under PostgreSQL's default max_connections of 100.
        return create_async_engine(url, pool_size=20, max_overflow=10, pool_pre_ping=True)
    except (ImportError, SQLAlchemyError, ValueError) as err:
        raise ConfigError(f"CHATBRIDGE_DATABASE_URL is not usable: {err}") from err


def open_store(engine: AsyncEngine) -> Store:
    """The store for ``engine``; on SQLite it also gets synchronous engines (see Store)."""
    if engine.dialect.name != "sqlite":
        return Store(engine)
    url = engine.url.set(drivername="sqlite+pysqlite")
    patient = create_sync_engine(url, connect_args={"check_same_thread": False})
    event.listen(patient, "connect", _sqlite_pragmas)
    inline = create_sync_engine(url)
    event.listen(inline, "connect", _sqlite_pragmas_no_wait)
    return Store(engine, sync_engine=patient, inline_engine=inline)


def _config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def _run(engine: AsyncEngine, action: str, revision: str = "head") -> None:
    from alembic import command

    def go(connection: Connection) -> None:
        cfg = _config(connection)
        if action == "upgrade":
            command.upgrade(cfg, revision)
        elif action == "downgrade":
            command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(go)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate up to ``revision``."""
    await _run(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Migrate down to ``revision`` (``base`` for an empty database)."""
    await _run(engine, "downgrade", revision)


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision, or ``None`` when it was never migrated."""
    async with engine.connect() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("alembic_version")):
            return None
        value = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return str(value) if value is not None else None


def _unreachable(engine: AsyncEngine, err: BaseException) -> StoreError:
    where = engine.url.render_as_string(hide_password=True)
    return StoreError(f"cannot reach the database {where}: {type(err).__name__}",
                      user_message=f"Cannot reach the database {where}.")


@contextlib.asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Serialize first-use migrations of one SQLite file across processes."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a+b") as handle:  # noqa: ASYNC230
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Be sure the schema is at HEAD: migrate SQLite, ask for ``db upgrade`` elsewhere."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as err:
        raise _unreachable(engine, err) from err
    try:
        if await current(engine) == HEAD:
            return
        async with _migration_lock(engine):
            revision = await current(engine)  # another process may have just done it
            if revision == HEAD:
                return
            if engine.dialect.name == "sqlite":
                await upgrade(engine)
                return
    except (SQLAlchemyError, OSError) as err:
        raise _unreachable(engine, err) from err
    raise ConfigError(
        f"the database is at revision {revision or 'none'}, chatbridge needs {HEAD}: "
        "run `chatbridge db upgrade`"
    )
