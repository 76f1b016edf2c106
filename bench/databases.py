"""Databases for the benchmarks: a PostgreSQL server (given, or a throwaway cluster from
tests/pg.py) and new migrated databases on it or on SQLite."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["new_database", "postgres_cluster"]


@contextlib.contextmanager
def postgres_cluster(url: str | None) -> Iterator[tuple[str, int | None]]:
    """(URL, postmaster pid): the server at ``url``, or a throwaway cluster stopped on exit
    (its pid given, so a benchmark can count the server's CPU)."""
    if url:
        yield url, None
        return
    from tests.pg import Cluster

    cluster = Cluster()
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        yield cluster.url, pid
    finally:
        cluster.stop()


async def new_database(kind: str, workdir: Path, pg_url: str | None, *,
                       prefix: str = "bench") -> str:
    """A new database migrated to the newest revision: a file in ``workdir`` for
    ``kind`` "sqlite", else a new database on the server at ``pg_url``; its URL."""
    from bots.db import create_engine, upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / name}.db"
    else:
        import asyncpg
        from sqlalchemy.engine import make_url

        assert pg_url is not None
        base = make_url(pg_url)
        admin = await asyncpg.connect(host=base.host, port=base.port, user=base.username,
                                      password=base.password,
                                      database=base.database or "postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url
