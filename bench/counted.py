"""Run ``chatbridge`` counting its database work (the benchmark's replicas run this).

``python -m bench.counted slack --port N`` is ``chatbridge slack --port N`` with counters
on every SQL statement and transaction (SQLAlchemy events) and, on PostgreSQL, on every
request the client waits for the server to answer (asyncpg's calls: a prepare, a query
or a statement's execution, BEGIN/COMMIT/ROLLBACK, the pool's ping): the server round
trips. The counts are written as JSON to ``$CHATBRIDGE_BENCH_COUNTS`` five times a
second; the driver reads them before and after a run. The counters cost about a
microsecond each, a few dozen a turn.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

COUNTS: Counter[str] = Counter()


def _counting(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return await fn(*args, **kwargs)

    return wrapper


def install() -> None:
    """Count statements and transactions (any database), and asyncpg's round trips."""
    import asyncpg
    from asyncpg.prepared_stmt import PreparedStatement
    from sqlalchemy import Engine, event

    def statement(*_args: Any) -> None:
        COUNTS["statements"] += 1

    def commit(*_args: Any) -> None:
        COUNTS["commits"] += 1

    def rollback(*_args: Any) -> None:
        COUNTS["rollbacks"] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)
    event.listen(Engine, "rollback", rollback)
    # Each of these sends one request and waits for its answer (a simple query, or
    # Parse/Bind/Execute + Sync); none calls another of them.
    for cls, method in ((asyncpg.Connection, "execute"), (asyncpg.Connection, "fetchrow"),
                        (asyncpg.Connection, "fetch"), (asyncpg.Connection, "fetchval"),
                        (asyncpg.Connection, "prepare"), (asyncpg.Connection, "executemany"),
                        (PreparedStatement, "fetch"), (PreparedStatement, "fetchrow"),
                        (PreparedStatement, "executemany")):
        setattr(cls, method, _counting("round_trips", getattr(cls, method)))


def _writer(path: str) -> None:
    while True:
        data = json.dumps(dict(COUNTS))
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            handle.write(data)
        os.replace(tmp, path)
        time.sleep(0.2)


def main() -> int:
    """Install the counters, start writing them, and run the command line."""
    install()
    path = os.environ.get("CHATBRIDGE_BENCH_COUNTS")
    if path:
        threading.Thread(target=_writer, args=(path,), daemon=True,
                         name="bench counts").start()
    from bots.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
