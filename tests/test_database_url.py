"""PostgreSQL URLs written libpq-style (`?sslmode=require`, as psql and most guides write
them) work, or say what to write; against a real PostgreSQL server."""

from __future__ import annotations

import pytest

from bots import db
from core.errors import ConfigError, StoreError

pytestmark = pytest.mark.postgres


async def _start(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.ensure_schema(engine)
    finally:
        await engine.dispose()


async def test_libpq_options_are_translated(postgres_url: str) -> None:
    # It connects (then asks for `db upgrade`: the database is new).
    with pytest.raises(ConfigError, match="chatbridge db upgrade"):
        await _start(postgres_url + "?sslmode=prefer&connect_timeout=5&application_name=cb")


async def test_sslmode_require_reaches_the_driver(postgres_url: str) -> None:
    # The test cluster has no TLS: the driver refuses, naming the database, not a TypeError.
    with pytest.raises(StoreError) as caught:
        await _start(postgres_url + "?sslmode=require")
    assert "TypeError" not in str(caught.value)
    assert caught.value.user_message.startswith("Cannot reach the database")


@pytest.mark.parametrize(("query", "says"), [
    ("sslmode=maybe", "sslmode=maybe is not one of"),
    ("sslrootcert=/etc/ca.pem&sslmode=verify-full", "PGSSLROOTCERT"),
    ("connect_timeout=soon", "connect_timeout=soon"),
    ("frobnicate=1", "option the database driver does not take"),
])
async def test_options_asyncpg_cannot_take_say_what_to_write(postgres_url: str, query: str,
                                                             says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        await _start(f"{postgres_url}?{query}")
