"""PostgreSQL statements that do a whole transaction's work in one server round trip.

asyncpg sends one statement per round trip, and BEGIN and COMMIT are round trips of their
own. A data-modifying CTE lets PostgreSQL run several writes (and the reads they depend
on) as ONE statement, atomically, without a transaction around it (``Store.run_one``).
SQLite has no DML in CTEs: it runs the same work as separate statements, in-process.
Every statement here is built once and executed with parameters (issue 11).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal_column,
    not_,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON

from core.store.models import WAITING_SQL
from core.store.tables import _conv, _evt, _lease, _msg

__all__ = ["ADD_USER_MESSAGE", "BEGIN_READ", "CLAIM_KEYS", "FINISH_ANSWER", "MESSAGE_COLUMNS"]

MESSAGE_COLUMNS = (
    "conversation_id", "role", "author_id", "author_name", "text", "reasoning", "model",
    "token_count", "image_count", "prompt_tokens", "completion_tokens", "usage_estimated",
    "cached_tokens", "cache_creation_tokens", "latency_ms", "status", "error", "event_id",
    "sort_key", "created_at", "video_count",
)


def _param(name: str) -> Any:
    # Not the column's own name: an execution's parameters named after columns of a
    # table a statement updates would become SET clauses of that UPDATE.
    return bindparam(f"m_{name}", type_=_msg.c[name].type)


def _finish_answer() -> Any:
    """``finish_turn`` of a queued turn as one statement: extend the lease (the fence);
    if it is ours and the turn's events are not all closed yet, store the answer (with
    the first message the turn noted as shown as its platform ref), touch the
    conversation and close the events. Returns one row: the answer's id (``NULL`` when
    nothing was stored) and whether the lease was held."""
    held = (update(_lease)
            .where(_lease.c.platform == bindparam("p_platform"),
                   _lease.c.scope_key == bindparam("p_scope"),
                   _lease.c.owner == bindparam("p_owner"))
            .values(expires_at=bindparam("p_until"))
            .returning(_lease.c.owner)
            .cte("held"))
    of_turn = and_(_evt.c.platform == bindparam("p_platform"),
                   _evt.c.event_id.in_(bindparam("p_closes", expanding=True)))
    closed = _evt.c.status.in_([literal_column("'done'"), literal_column("'failed'")])
    # Stored already by an attempt whose COMMIT was not confirmed: every event closed.
    undone = or_(not_(exists().where(of_turn)), exists().where(of_turn, not_(closed)))
    first_ref = (select(cast(_evt.c.shown, JSON).op("->>", return_type=String)(
                            literal_column("0")))
                 .where(_evt.c.platform == bindparam("p_platform"),
                        _evt.c.event_id == bindparam("m_event_id", type_=_evt.c.event_id.type))
                 .scalar_subquery())
    answer = (insert(_msg)
              .from_select([*MESSAGE_COLUMNS, "platform_ref"],
                           select(*(_param(c) for c in MESSAGE_COLUMNS), first_ref)
                           .where(exists(select(held.c.owner)), undone))
              .returning(_msg.c.id)
              .cte("answer"))
    stored = exists(select(answer.c.id))
    touch = (update(_conv).where(_conv.c.id == bindparam("m_conversation_id"), stored)
             .values(updated_at=bindparam("m_created_at")).cte("touch"))
    close = (update(_evt).where(of_turn, stored)
             .values(status=bindparam("p_status"), finished_at=bindparam("m_created_at"),
                     payload=null())
             .cte("close"))
    return (select(select(answer.c.id).scalar_subquery(),
                   select(func.count()).select_from(held).scalar_subquery())
            .add_cte(touch).add_cte(close))


FINISH_ANSWER = _finish_answer()


# The inbox's claim (core.store.queue.InboxStore.claim) as one statement: the due keys
# whose lease is free, oldest first; their lease rows locked (SKIP LOCKED: replicas
# claiming at once skip each other's keys) and taken; each key's waiting events (up to
# the batch size, in the platform's order) marked as processing — or, tried too often,
# as failed. Returns the events with the payload they had (a given-up event's is cleared).
CLAIM_KEYS = text(f"""
WITH due AS (
    SELECT e.platform, e.scope_key, min(e.id) AS first
    FROM inbound_events AS e
    JOIN inbox_leases AS l ON l.platform = e.platform AND l.scope_key = e.scope_key
    WHERE e.{WAITING_SQL.replace(" AND ", " AND e.")}
      AND l.expires_at <= :p_now AND e.platform = ANY(:p_platforms)
    GROUP BY e.platform, e.scope_key
    HAVING max(e.available_at) <= :p_now
    ORDER BY first
    LIMIT :p_scan
), free AS (
    SELECT l.platform, l.scope_key, due.first
    FROM inbox_leases AS l
    JOIN due ON l.platform = due.platform AND l.scope_key = due.scope_key
    WHERE l.expires_at <= :p_now
      AND (l.platform || '/' || l.scope_key) <> ALL(:p_busy)
    ORDER BY due.first
    LIMIT :p_limit
    FOR UPDATE OF l SKIP LOCKED
), taken AS (
    UPDATE inbox_leases AS l SET owner = :p_owner, expires_at = :p_until
    FROM free
    WHERE l.platform = free.platform AND l.scope_key = free.scope_key
    RETURNING l.platform, l.scope_key, free.first
), batch AS (
    SELECT taken.first, w.*
    FROM taken CROSS JOIN LATERAL (
        SELECT e.id, e.platform, e.scope_key, e.event_id, e.payload, e.attempts,
               e.message_id, e.sort_key, e.shown
        FROM inbound_events AS e
        WHERE e.platform = taken.platform AND e.scope_key = taken.scope_key
          AND e.{WAITING_SQL.replace(" AND ", " AND e.")}
        ORDER BY coalesce(e.sort_key, ''), e.id
        LIMIT :p_batch
    ) AS w
), marked AS (
    UPDATE inbound_events AS e
    SET attempts = e.attempts + 1, lease_owner = :p_owner,
        status = CASE WHEN e.attempts + 1 > :p_max_attempts THEN 'failed' ELSE 'processing' END,
        finished_at = CASE WHEN e.attempts + 1 > :p_max_attempts THEN :p_now
                           ELSE e.finished_at END,
        payload = CASE WHEN e.attempts + 1 > :p_max_attempts THEN NULL ELSE e.payload END
    FROM batch
    WHERE e.id = batch.id
    RETURNING e.id
)
SELECT batch.platform, batch.scope_key, batch.id, batch.event_id, batch.payload,
       batch.attempts, batch.message_id, batch.sort_key, batch.shown
FROM batch JOIN marked ON marked.id = batch.id
ORDER BY batch.first, coalesce(batch.sort_key, ''), batch.id
""").bindparams(
    bindparam("p_now", type_=DateTime(timezone=True)),
    bindparam("p_until", type_=DateTime(timezone=True)),
    bindparam("p_platforms", type_=ARRAY(String)),
    bindparam("p_busy", type_=ARRAY(String)),
    bindparam("p_scan", type_=Integer), bindparam("p_limit", type_=Integer),
    bindparam("p_batch", type_=Integer), bindparam("p_max_attempts", type_=Integer),
    bindparam("p_owner", type_=String),
)


# begin_turn of a queued turn, its reads in one statement: extend the lease (the fence),
# the user messages an earlier attempt stored for these events (JSON pairs), the open
# conversation under the key and its memory row. One row, whether they exist or not.
BEGIN_READ = text("""
WITH held AS (
    UPDATE inbox_leases SET expires_at = :p_until
    WHERE platform = :p_platform AND scope_key = :p_scope AND owner = :p_owner
    RETURNING owner
)
SELECT (SELECT count(*) FROM held) AS held,
       (SELECT json_agg(json_build_array(e.event_id, e.message_id))
        FROM inbound_events AS e
        WHERE e.platform = :p_platform AND e.event_id = ANY(:p_events)
          AND e.message_id IS NOT NULL) AS stored,
       c.id, c.profile, m.conversation_id AS has_memory, m.summary, m.summary_tokens,
       m.covers_message_id, m.epoch, m.updated_at
FROM (SELECT 1) AS one
LEFT JOIN conversations AS c
       ON c.platform = :p_platform AND c.scope_key = :p_scope AND c.status = 'open'
LEFT JOIN conversation_memory AS m ON m.conversation_id = c.id
""").bindparams(
    bindparam("p_until", type_=DateTime(timezone=True)),
    bindparam("p_platform", type_=String), bindparam("p_scope", type_=String),
    bindparam("p_owner", type_=String), bindparam("p_events", type_=ARRAY(String)),
)
# One user message of a queued turn and its event's link to it, one statement.
_user = (insert(_msg).values({c: _param(c) for c in MESSAGE_COLUMNS})
         .returning(_msg.c.id).cte("user_message"))
ADD_USER_MESSAGE = select(_user.c.id).add_cte(
    update(_evt)
    .where(_evt.c.platform == bindparam("p_platform"),
           _evt.c.event_id == bindparam("m_event_id"))
    .values(message_id=select(_user.c.id).scalar_subquery())
    .cte("linked"))
