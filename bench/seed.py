"""Seed a database with past conversations in bulk SQL (for benchmarks and plan tests).

Each past conversation is what one answered message leaves behind: the conversation, the
user's message and the answer (sharing the inbound event id; the answer has its Slack
``platform_ref``), the inbound event (answered, payload dropped) and the key's inbox
lease row. A few statements of ``INSERT … SELECT`` over a recursive counter, the same
SQL on SQLite and PostgreSQL: 50,000 conversations take seconds, not minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

__all__ = ["seed"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TYPES: dict[str, TypeEngine[object]] = {
    "count": Integer(), "platform": String(), "tag": String(),
    "ts": DateTime(timezone=True), "epoch": DateTime(timezone=True)}
_COUNTER = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count) "
_KEY = "'D' || :tag || CAST(n.i AS VARCHAR(12))"  # the conversation key of number i

_STATEMENTS = (
    _COUNTER
    + "INSERT INTO conversations (platform, scope_key, status, created_at, updated_at) "
    f"SELECT :platform, {_KEY}, 'open', :ts, :ts FROM n",
    _COUNTER
    + "INSERT INTO inbound_events (platform, event_id, status, received_at, finished_at, "
    "scope_key, available_at, attempts, lease_owner) "
    f"SELECT :platform, 'Ev' || :tag || CAST(n.i AS VARCHAR(12)), 'done', :ts, :ts, {_KEY}, "
    ":ts, 1, 'seed' FROM n",
    _COUNTER
    + "INSERT INTO inbox_leases (platform, scope_key, owner, expires_at) "
    f"SELECT :platform, {_KEY}, NULL, :epoch FROM n",
    # The user's message, then the answer, for every seeded conversation.
    "INSERT INTO messages (conversation_id, role, author_id, author_name, text, "
    "token_count, image_count, status, event_id, created_at) "
    "SELECT c.id, 'user', 'U' || c.scope_key, 'someone', 'a question asked long ago', 8, 0, "
    "'ok', 'Ev' || substr(c.scope_key, 2), :ts FROM conversations c "
    "WHERE c.platform = :platform AND c.scope_key LIKE 'D' || :tag || '%' ORDER BY c.id",
    "INSERT INTO messages (conversation_id, role, text, token_count, image_count, status, "
    "event_id, platform_ref, model, created_at) "
    "SELECT c.id, 'assistant', 'an answer given long ago', 8, 0, 'ok', "
    "'Ev' || substr(c.scope_key, 2), c.scope_key || '/1700000000.000001', 'qwen-plus', :ts "
    "FROM conversations c "
    "WHERE c.platform = :platform AND c.scope_key LIKE 'D' || :tag || '%' ORDER BY c.id",
)


async def seed(engine: AsyncEngine, conversations: int, *, platform: str = "slack",
               tag: str = "seed", analyze: bool = True) -> None:
    """Add ``conversations`` past conversations (keys ``D<tag><n>``), then ANALYZE.

    PostgreSQL's autovacuum would analyze tables this size soon after; SQLite only when
    asked (``ANALYZE``/``PRAGMA optimize``) — the benchmark asks on both, the plan test
    looks at SQLite's plans both ways.
    """
    if conversations <= 0:
        return
    stamp = datetime.now(UTC) - timedelta(days=30)
    params = {"count": conversations, "platform": platform, "tag": tag, "ts": stamp,
              "epoch": EPOCH}
    async with engine.begin() as conn:
        for sql in _STATEMENTS:
            used = [k for k in params if f":{k}" in sql]
            # Typed: asyncpg is then sent casts (a bare parameter in a SELECT list is text).
            stmt = text(sql).bindparams(*(bindparam(k, type_=_TYPES[k]) for k in used))
            await conn.execute(stmt, {k: params[k] for k in used})
    if analyze:
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
            await conn.commit()
