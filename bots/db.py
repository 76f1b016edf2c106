"""Database engine creation and Alembic migrations (``chatbridge db …``).

A new SQLite database is migrated automatically on first use; PostgreSQL is
migrated explicitly with ``chatbridge db upgrade``.

Migrations run in one transaction on both databases. PostgreSQL has transactional DDL;
on SQLite the Python driver (pysqlite, under aiosqlite) commits before every DDL
statement unless told otherwise, so a process killed during its first migration used to
leave some tables and no revision behind. Migrations on SQLite therefore run on their
own connection with the driver's transaction handling off (``isolation_level=None``) and
an explicit ``BEGIN IMMEDIATE``: all of it is committed, or none.
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
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from core.errors import ConfigError, StoreError
from core.store import Store

__all__ = [
    "HEAD", "create_engine", "current", "downgrade", "ensure_schema", "migration_engine",
    "open_store", "upgrade",
]

HEAD = "0016"  # newest revision in migrations/versions; a test keeps them equal
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
        parsed, connect_args = _libpq_options(make_url(url))
        # Turns hold a connection only for a transaction at a time; 20 kept open covers
        # the inbox's claims and the acknowledgements without reconnecting for each, and
        # 3 replicas at 30 stay under PostgreSQL's default max_connections of 100.
        # No pool_pre_ping (BEGIN, a ping and ROLLBACK: three round trips per checkout):
        # a pooled connection the server dropped fails before COMMIT, and the store runs
        # that transaction again on a new one (Store._server_tx; test_pg_restart.py).
        return create_async_engine(parsed, pool_size=20, max_overflow=10,
                                   connect_args=connect_args)
    except (ImportError, SQLAlchemyError, ValueError) as err:
        raise ConfigError(f"CHATBRIDGE_DATABASE_URL is not usable: {err}") from err


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq options asyncpg reads only from the environment (PG* variables), not as arguments.
_LIBPQ_FILES = {"sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
                "sslpassword": "PGSSLPASSWORD", "sslcrl": "PGSSLCRL"}


def _libpq_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """Translate libpq-style query options (what ``psql`` and most guides write) into
    asyncpg's connect arguments: ``sslmode`` → ``ssl``, ``connect_timeout`` → ``timeout``,
    ``application_name`` → a server setting. Options asyncpg cannot take are refused with
    what to write instead."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() != "asyncpg":
        return url, {}
    query = dict(url.query)
    args: dict[str, Any] = {}
    if "sslmode" in query:
        mode = str(query.pop("sslmode"))
        if mode not in _SSLMODES:
            raise ConfigError(f"CHATBRIDGE_DATABASE_URL: sslmode={mode} is not one of "
                              f"{', '.join(_SSLMODES)}")
        args["ssl"] = mode
    if "connect_timeout" in query:
        raw = str(query.pop("connect_timeout"))
        try:
            args["timeout"] = float(raw)
        except ValueError as err:
            raise ConfigError(f"CHATBRIDGE_DATABASE_URL: connect_timeout={raw} is not a "
                              "number of seconds") from err
    if "application_name" in query:
        args["server_settings"] = {"application_name": str(query.pop("application_name"))}
    for option, variable in _LIBPQ_FILES.items():
        if option in query:
            raise ConfigError(
                f"CHATBRIDGE_DATABASE_URL: the asyncpg driver does not take {option}= in the "
                f"URL; set the environment variable {variable} instead (with "
                "sslmode=verify-full, or verify-ca, in the URL)")
    return url.set(query=query), args


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


def _sqlite_autocommit_driver(dbapi_conn: Any, record: Any) -> None:
    # The driver's own transaction handling commits before each DDL statement; turn it
    # off (the pragmas then run outside any transaction, as journal_mode=WAL needs) and
    # let SQLAlchemy's "begin" emit the BEGIN below.
    dbapi_conn.isolation_level = None
    _sqlite_pragmas(dbapi_conn, record)


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE: take the write lock before the first read, so two first starts on one
    # file do not both decide to migrate (the file lock already orders them).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def migration_engine(url: str | URL) -> AsyncEngine:
    """An engine for migrations whose transactions include DDL, on SQLite too."""
    engine = create_async_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_autocommit_driver)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


@contextlib.asynccontextmanager
async def _migration_engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """``engine`` itself, except on a SQLite file: an engine of its own (see above)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield engine
        return
    own = migration_engine(engine.url)
    try:
        yield own
    finally:
        await own.dispose()


async def _run(engine: AsyncEngine, action: str, revision: str = "head") -> None:
    from alembic import command

    def go(connection: Connection) -> None:
        cfg = _config(connection)
        if action == "upgrade":
            command.upgrade(cfg, revision)
        elif action == "downgrade":
            command.downgrade(cfg, revision)

    async with _migration_engine(engine) as migrating, migrating.begin() as conn:
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


async def _half_migrated(engine: AsyncEngine) -> list[str]:
    """chatbridge's tables in a database that has no revision recorded."""
    from core.store.models import Base

    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    return sorted(names & set(Base.metadata.tables))


def _migration_failed(engine: AsyncEngine, err: BaseException) -> StoreError:
    where = engine.url.render_as_string(hide_password=True)
    cause = str(getattr(err, "orig", None) or err).splitlines()[0][:200]
    return StoreError(f"migrating {where} failed: {type(err).__name__}: {cause}",
                      user_message=f"Migrating the database {where} to revision {HEAD} "
                      f"failed: {cause}.")


async def ensure_schema(engine: AsyncEngine) -> None:
    """Be sure the schema is at HEAD: migrate SQLite, ask for ``db upgrade`` elsewhere."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except TypeError as err:  # e.g. connect() got an unexpected keyword argument 'x'
        raise ConfigError(
            "CHATBRIDGE_DATABASE_URL has an option the database driver does not take "
            f"({err}); remove it from the URL's query string"
        ) from err
    except (SQLAlchemyError, OSError) as err:
        raise _unreachable(engine, err) from err
    try:
        if await current(engine) == HEAD:
            return
        async with _migration_lock(engine):
            revision = await current(engine)  # another process may have just done it
            if revision == HEAD:
                return
            if revision is None and (tables := await _half_migrated(engine)):
                where = engine.url.render_as_string(hide_password=True)
                shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
                raise StoreError(
                    f"{where} has tables ({shown}) but no schema revision",
                    user_message=f"The database {where} has chatbridge tables ({shown}) but "
                    "no schema revision: a migration was interrupted (older versions "
                    "did not migrate SQLite in one transaction) or the tables were made "
                    "another way. Move the database aside (or drop those tables) and "
                    "start again to migrate it afresh.",
                )
            if engine.dialect.name == "sqlite":
                try:
                    await upgrade(engine)
                except SQLAlchemyError as err:
                    raise _migration_failed(engine, err) from err
                return
    except (SQLAlchemyError, OSError) as err:
        raise _unreachable(engine, err) from err
    raise ConfigError(
        f"the database is at revision {revision or 'none'}, chatbridge needs {HEAD}: "
        "run `chatbridge db upgrade`"
    )
