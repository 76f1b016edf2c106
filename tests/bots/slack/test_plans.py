"""Every statement a Slack turn runs uses an index, however large the database is.

The real bot (bolt over HTTP, the inbox, the store) answers a DM, a channel mention and a
thread follow-up on a database seeded with past conversations (``bench.seed``, then
ANALYZE); every SQL statement it sent is recorded and EXPLAINed on the same database. A
scan of a table that grows with use (conversations, messages, inbound events, inbox
leases) fails the test: it would make a month-old bot slower than a new one.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from bench.seed import seed
from tests.bots.slack.conftest import HarnessFactory, mention, message
from tests.fakes.model_server import Reply

GROWING = {"conversations", "messages", "inbound_events", "inbox_leases"}
# Columns with a handful of values: an index lookup on these alone walks most of a table
# (every conversation of the platform, every answered event) — a scan by another name.
UNSELECTIVE = {"platform", "status", "role"}
# Partial indexes that hold only what is still to do (small whatever the table's size).
SMALL_PARTIAL = {"ix_inbound_events_waiting"}
SEEDED = 3000

Statement = tuple[str, Any]
_SQLITE_STEP = re.compile(r"^(SCAN|SEARCH) (\w+)(?: USING (?:COVERING )?INDEX (\w+))?"
                          r"(?: USING INTEGER PRIMARY KEY)?(?: \((.*)\))?")


def sqlite_walks(detail: str) -> bool:
    """Whether one step of a SQLite plan reads a growing table through, or most of it."""
    step = _SQLITE_STEP.match(detail)
    if step is None or step[2] not in GROWING or step[3] in SMALL_PARTIAL:
        return False
    if step[1] == "SCAN":
        return True
    equal = re.findall(r"(\w+)=\?", step[4] or "")
    return not any(column not in UNSELECTIVE for column in equal)


def sqlite_scans(path: str, statements: list[Statement]) -> list[str]:
    """The statements whose SQLite plan walks a growing table, with the plan."""
    found = []
    db = sqlite3.connect(path)
    try:
        for sql, params in statements:
            rows = db.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            plan = [str(r[3]) for r in rows]
            if any(sqlite_walks(d) for d in plan):
                found.append(f"{sql}\n  -> {plan}")
    finally:
        db.close()
    return found


def pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from pg_nodes(child)


def pg_walks(node: dict[str, Any]) -> bool:
    """Whether a PostgreSQL plan node reads a growing table through, or most of it."""
    if node["Node Type"] == "Seq Scan":
        return node.get("Relation Name") in GROWING
    index = node.get("Index Name")
    if index is None or index in SMALL_PARTIAL or not index.startswith(
            tuple(f"{t}" for t in ("ix_", "uq_", "pk_"))):
        return False
    table = next((t for t in GROWING if t in index), None)
    if table is None:
        return False
    cond = node.get("Index Cond", "")
    # An event still waiting is rare (PostgreSQL's statistics know it): selective.
    cond = re.sub(r"\(status\)::text = '(received|processing)'::text", "(waiting)", cond)
    equal = re.findall(r"\(*(\w+)\)*(?:::[\w ]+)? = |\((waiting)\)", cond)
    return not any(column not in UNSELECTIVE for pair in equal for column in pair if column)


async def pg_scans(url: str, statements: list[Statement]) -> list[str]:
    """The statements whose PostgreSQL plan has a sequential scan of a growing table."""
    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port, user=u.username,
                                 password=u.password, database=u.database)
    found = []
    try:
        for sql, params in statements:
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *params)
            plan = json.loads(raw)[0]["Plan"]
            walks = [f"{n['Node Type']} on {n.get('Relation Name')} "
                     f"{n.get('Index Name', '')} {n.get('Index Cond', '')}"
                     for n in pg_nodes(plan) if pg_walks(n)]
            if walks:
                found.append(f"{sql}\n  -> {walks}")
    finally:
        await conn.close()
    return found


async def test_turns_use_indexes_only(make_harness: HarnessFactory, db_url: str) -> None:
    await _turns_use_indexes_only(make_harness, db_url, analyze=True)


async def test_sqlite_turns_use_indexes_without_analyze(make_harness: HarnessFactory,
                                                        sqlite_url: str) -> None:
    # SQLite never analyzes by itself (PostgreSQL's autovacuum analyzes a table that grew):
    # the plans must hold without statistics too.
    await _turns_use_indexes_only(make_harness, sqlite_url, analyze=False)


async def _turns_use_indexes_only(make_harness: HarnessFactory, db_url: str, *,
                                  analyze: bool) -> None:
    recorded: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE",
                                                  "WITH")):
            recorded.append((statement, parameters[0] if executemany else parameters))

    async with make_harness(db_url) as h:
        await seed(h.runtime.store.engine, SEEDED, analyze=analyze)
        event.listen(Engine, "before_cursor_execute", record)
        try:
            h.model.enqueue(Reply(text="One."), Reply(text="Two."), Reply(text="Three."),
                            Reply(text="Four."))
            assert await h.event(message("hello", channel="D1", channel_type="im")) == 200
            await h.idle()
            assert await h.event(message("again", channel="D1", channel_type="im")) == 200
            await h.idle()
            root = mention("a question in a channel")
            assert await h.event(root) == 200
            await h.idle()
            assert await h.event(message("and more", user="U2", thread_ts=root["ts"])) == 200
            await h.idle()
            await asyncio.sleep(0.2)  # an idle poll of the inbox too
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        assert len(h.model.requests) == 4
        assert len(h.slack.posted()) == 4
    texts = {sql for sql, _ in recorded}
    assert any("messages" in s and "platform_ref" in s for s in texts)  # the reply's ref
    assert any("inbox_leases" in s for s in texts)  # the inbox's claim
    if db_url.startswith("sqlite"):
        database = make_url(db_url).database
        assert database
        scans = sqlite_scans(database, recorded)
    else:
        scans = await pg_scans(db_url, recorded)
    assert not scans, "\n\n".join(scans)
