"""Shared fixtures: databases (SQLite and a real PostgreSQL) and the loopback model server."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bots.db import create_engine, upgrade
from tests.fakes.model_server import FakeModelServer

for _name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
              "all_proxy"):
    os.environ.pop(_name, None)

# The default SQLite database lives in the user's data directory: never the real one here
# (subprocesses inherit this).
_DATA_HOME = tempfile.mkdtemp(prefix="chatbridge-tests-data-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server: CHATBRIDGE_TEST_POSTGRES_URL, or a throwaway cluster."""
    url = os.environ.get("CHATBRIDGE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from tests.pg import Cluster, bin_dir

    if bin_dir() is None:
        if IN_CI:
            pytest.fail("PostgreSQL is required in CI but its binaries are missing")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    base = make_url(postgres_server)
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=base.host, port=base.port, user=base.username, password=base.password,
        database=base.database or "postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A new SQLite database file."""
    return f"sqlite+aiosqlite:///{tmp_path}/chatbridge.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each database."""
    eng = create_engine(db_url)
    await upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture(scope="session")
def model_server() -> Iterator[FakeModelServer]:
    """The loopback model server (OpenAI-compatible and DashScope-native)."""
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def fake_model(model_server: FakeModelServer) -> Iterator[FakeModelServer]:
    """The model server, emptied of queued replies and recorded requests."""
    model_server.clear()
    yield model_server
    model_server.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: PostgreSQL, Slack, Telegram and the real model
    must all really run there."""
    shutil.rmtree(_DATA_HOME, ignore_errors=True)
    if not IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and exitstatus == 0:
        print(f"\nCI: {skipped} test(s) were skipped; everything must run in CI.")
        session.exitstatus = 1
