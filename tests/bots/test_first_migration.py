"""A first-use SQLite migration killed at any point leaves a database the next start uses.

Real processes: `chatbridge ask` on a new SQLite file is SIGKILLed while it migrates
(once each time the file holds one more table, and at fixed delays), then a second
`chatbridge ask` must answer.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bots import db
from core.errors import StoreError
from tests.fakes.model_server import FakeModelServer, Reply

ROOT = Path(__file__).resolve().parents[2]


def _env(folder: Path, fake: FakeModelServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    env.update({
        "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{folder}/cb.db",
        "CHATBRIDGE_MODEL_BASE_URL": fake.openai_base,
        "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen-plus",
        "CHATBRIDGE_RETRY_SECONDS": "1",
    })
    return env


def _tables(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0) as conn:
            return int(conn.execute("SELECT count(*) FROM sqlite_master "
                                    "WHERE type = 'table'").fetchone()[0])
    except sqlite3.Error:
        return 0


def _killed_ask(folder: Path, fake: FakeModelServer, *, tables: int | None,
                delay: float | None) -> None:
    """Start `chatbridge ask` on a new file; SIGKILL it once the file shows ``tables``
    tables (as committed for other connections) or ``delay`` s after the file appears."""
    folder.mkdir()
    path = folder / "cb.db"
    proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "ask", "hello"], cwd=folder,
                            env=_env(folder, fake), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if path.exists():
                if delay is not None:
                    time.sleep(delay)
                    break
                if tables is not None and _tables(path) >= tables:
                    break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


POINTS = [("tables", n) for n in range(1, 13)] + [("delay", d / 100) for d in range(0, 30, 3)]


@pytest.mark.parametrize(("how", "when"), POINTS, ids=[f"{h}-{w}" for h, w in POINTS])
def test_killed_first_migration_then_next_start_answers(
    tmp_path: Path, fake_model: FakeModelServer, how: str, when: float
) -> None:
    folder = tmp_path / "bot"
    _killed_ask(folder, fake_model, tables=int(when) if how == "tables" else None,
                delay=when if how == "delay" else None)
    fake_model.enqueue(Reply(text="hi there"))
    again = subprocess.run([sys.executable, "-m", "bots.cli", "ask", "hello"], cwd=folder,
                           env=_env(folder, fake_model), capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "hi there"


async def test_half_migrated_database_names_the_real_cause(tmp_path: Path) -> None:
    """A database with tables but no revision (an interrupted migration of an older
    chatbridge, or tables made by hand) gets a message naming it, not "cannot reach"."""
    path = tmp_path / "half.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("CREATE TABLE conversations (id INTEGER PRIMARY KEY)")
    engine: AsyncEngine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        with pytest.raises(StoreError) as caught:
            await db.ensure_schema(engine)
    finally:
        await engine.dispose()
    text = caught.value.user_message
    assert "conversations" in text and "no schema revision" in text
    assert "Cannot reach" not in text
