"""Tool calls in SQL: each round's calls when the model asks, each result as it comes.

A turn's calls are linked to its (last) user message, so they come back with it in the
next turn's context, and a turn retaken after a crash resumes from the finished ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, Table, bindparam, select, update

from core.errors import LeaseLost
from core.store.models import ToolCallRow, utcnow
from core.tokens import TokenCounter
from core.types import ToolCall

if TYPE_CHECKING:
    from core.store.store import Fence, Store, TurnStart
    from core.tools.loop import ToolResult

__all__ = ["PLACEHOLDER", "StoreJournal", "StoredTool", "attach_tools", "tools_since"]

_tc: Table = ToolCallRow.__table__  # type: ignore[assignment]
PLACEHOLDER = "[earlier tool result not shown]"

# Retry = how a write is run again while the database is away (a queued turn's): given the
# write and what it does. A retried write whose COMMIT was not confirmed must not fail.
Retry = Callable[[Callable[[], Awaitable[None]], str], Awaitable[None]]
_FINISH = (
    update(_tc)
    .where(_tc.c.message_id == bindparam("p_message"), _tc.c.round == bindparam("p_round"),
           _tc.c.position == bindparam("p_position"))
    .values(output=bindparam("p_output"), status=bindparam("p_status"),
            token_count=bindparam("p_tokens"), duration_ms=bindparam("p_ms"))
)
_SINCE = (
    select(_tc.c.message_id, _tc.c.round, _tc.c.call_id, _tc.c.name, _tc.c.arguments,
           _tc.c.output, _tc.c.status, _tc.c.token_count, _tc.c.preamble)
    .where(_tc.c.conversation_id == bindparam("p_conv"),
           _tc.c.message_id >= bindparam("p_from"))
    .order_by(_tc.c.message_id, _tc.c.round, _tc.c.position)
)


class StoredTool(NamedTuple):
    """A stored call and its result (``output`` is ``None`` if it never finished)."""

    round: int
    call_id: str
    name: str
    arguments: str
    output: str | None
    status: str
    token_count: int
    preamble: str | None = None


def tools_since(conn: Connection, conversation_id: int,
                first_id: int) -> dict[int, list[StoredTool]]:
    """Calls of the turns whose user message id is ``first_id`` or later, by message id."""
    found: dict[int, list[StoredTool]] = {}
    for row in conn.execute(_SINCE, {"p_conv": conversation_id, "p_from": first_id}):
        found.setdefault(row[0], []).append(StoredTool(*row[1:]))
    return found


def attach_tools(conn: Connection, conversation_id: int, newest_first: list[Any],
                 room: int) -> list[Any]:
    """``newest_first`` (stored messages) with their turns' tool calls attached.

    Newer turns come first to the ``room`` tokens left in the budget; a turn whose results
    no longer fit keeps its calls with a placeholder for each result.
    """
    users = [m.id for m in newest_first if m.role == "user"]
    if not users:
        return newest_first
    tools = tools_since(conn, conversation_id, min(users))
    if not tools:
        return newest_first
    out = []
    for message in newest_first:
        calls = tools.get(message.id) if message.role == "user" else None
        if calls:
            cost = sum(c.token_count for c in calls)
            if cost <= room:
                room -= cost
            else:
                calls = [c._replace(output=PLACEHOLDER) if c.output is not None else c
                         for c in calls]
            message = message._replace(tools=tuple(calls))
        out.append(message)
    return out


class StoreJournal:
    """The loop's journal in SQL, under the turn's lease when it has one."""

    def __init__(self, store: Store, start: TurnStart, counter: TokenCounter,
                 retry: Retry | None = None) -> None:
        self._store = store
        self._start = start
        self._counter = counter
        self._retry = retry

    async def _run(self, work: Callable[[Connection], None], doing: str) -> None:
        async def once() -> None:
            await self._store.run(work, doing)

        await (self._retry(once, doing) if self._retry is not None else once())

    def _hold(self, conn: Connection) -> None:
        fence: Fence | None = self._start.fence
        if fence is not None:
            from core.store.store import extend_lease

            if not extend_lease(conn, fence):
                raise LeaseLost(f"lease on {fence.platform} {fence.scope} lost")

    async def calls(self, round_no: int, calls: Sequence[ToolCall], text: str = "") -> None:
        """Store the round's calls (as running) before any of them runs, and the text the
        model wrote before them."""
        start = self._start
        now = utcnow()
        rows = [{"conversation_id": start.conversation_id, "message_id": start.message_id,
                 "round": round_no, "position": i, "call_id": c.id[:128], "name": c.name[:128],
                 "arguments": c.arguments, "output": None, "status": "running",
                 "preamble": (text or None) if i == 0 else None,
                 "token_count": self._counter.count(c.arguments) + 8, "started_at": now}
                for i, c in enumerate(calls)]

        insert_once = (self._store.upsert(_tc)
                       .on_conflict_do_nothing(index_elements=["message_id", "round", "position"]))

        def work(conn: Connection) -> None:
            self._hold(conn)
            conn.execute(insert_once, rows)  # again after an unconfirmed COMMIT: no-op

        await self._run(work, "store the tool calls")

    async def result(self, round_no: int, position: int, result: ToolResult) -> None:
        """Store one call's result."""
        params = {"p_message": self._start.message_id, "p_round": round_no,
                  "p_position": position, "p_output": result.output, "p_status": result.status,
                  "p_tokens": self._counter.count(result.output) + 8,
                  "p_ms": result.duration_ms}

        def work(conn: Connection) -> None:
            self._hold(conn)
            conn.execute(_FINISH, params)

        await self._run(work, "store a tool result")
