"""Alembic environment: async engine, target = core's metadata.

``chatbridge db …`` passes an open connection in ``config.attributes["connection"]``;
the plain ``alembic`` command builds an async engine from ``sqlalchemy.url``
(or ``CHATBRIDGE_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from bots.db import migration_engine
from core.knowledge.models import schema_filter
from core.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("CHATBRIDGE_DATABASE_URL")
        or "sqlite+aiosqlite:///chatbridge.db"
    )


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=schema_filter,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # On SQLite too, all of the migration in one transaction (see bots/db.py).
    engine = migration_engine(_url())
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    """Run migrations on a given connection, or on a new async engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
