"""The store's engines and its one way of running a transaction (see ``core.store.store``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import StoreError
from core.store.tables import (
    RECONNECT_WAITS,
    StoredMessage,
    T,
    _att,
    _conv,
    _evt,
)

log = logging.getLogger(__name__)
FINISHED_MEMORY = 10_000  # closed events remembered until their claim is released


class StoreBase:
    """The store's engines and transactions; the rest of ``Store`` builds on them."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sync_engine: Engine | None = None,
        inline_engine: Engine | None = None,
    ) -> None:
        self._engine = engine
        self._sync = sync_engine
        self._inline = inline_engine
        self._windows: OrderedDict[int, tuple[tuple[int, int], list[StoredMessage]]] | None = (
            OrderedDict() if engine.dialect.name == "sqlite" else None
        )
        self._windows_lock = threading.Lock()
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="chatbridge-db") if sync_engine else None
        )
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._insert_event = (
            self._insert(_evt)
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            .returning(_evt.c.id)
        )
        self._insert_conversation = self._insert(_conv).on_conflict_do_nothing(
            index_elements=["platform", "scope_key"], index_where=sql_text("status = 'open'"),
        )
        self._open_new = self._insert_conversation.returning(_conv.c.id, _conv.c.profile)
        self._insert_attachment = self._insert(_att).on_conflict_do_nothing(
            index_elements=["sha256"]
        )
        # (platform, event id) of inbound events a finish_turn of this process closed,
        # until the inbox releases their claim (which then has nothing to close).
        self._finished: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _mark_finished(self, platform: str, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            self._finished[(platform, event_id)] = None
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def take_finished(self, platform: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` a ``finish_turn`` here closed (forgotten once asked)."""
        return {e for e in event_ids if self._finished.pop((platform, e), 1) is None}

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this store uses."""
        return self._engine

    def close(self) -> None:
        """Stop the database thread and close its engine, if any."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        for sync in (self._sync, self._inline):
            if sync is not None:
                sync.dispose()

    def _sync_tx(self, work: Callable[[Connection], T], engine: Engine | None = None) -> T:
        sync = engine or self._sync
        assert sync is not None
        with sync.begin() as conn:
            return work(conn)

    async def run(self, work: Callable[[Connection], T], doing: str) -> T:
        """Run ``work`` in one transaction (for the store's companions, e.g. the inbox)."""
        return await self._tx(work, doing)

    async def run_one(self, work: Callable[[Connection], T], doing: str) -> T:
        """Run ``work`` — ONE statement, safe to repeat (an upsert, an idempotent update)
        — in one transaction; on PostgreSQL without BEGIN/COMMIT (autocommit: the
        statement is its own transaction), one server round trip instead of three."""
        return await self._tx(work, doing, single=True)

    @property
    def pipelined(self) -> bool:
        """Whether the database runs data-modifying CTEs (PostgreSQL), so that several
        writes of a transaction can go to the server as one statement."""
        return self._engine.dialect.name == "postgresql"

    @property
    def upsert(self) -> Callable[[Table], Any]:
        """The dialect's ``insert`` (with ``on_conflict_do_…``)."""
        return self._insert

    async def _server_tx(self, work: Callable[[Connection], T], single: bool = False) -> T:
        """A transaction on a database server; a connection lost before COMMIT is retried
        (twice, soon).

        The failed attempt never committed, so running ``work`` again cannot write twice.
        A failure during COMMIT is not retried: the server may have committed.
        ``single``: ``work`` is one statement that may run twice (``run_one``): sent in
        autocommit mode, and retried after a lost connection whatever the server did.
        """
        waits = iter(RECONNECT_WAITS)
        while True:
            committing = False
            try:
                async with self._engine.connect() as conn:
                    if single:
                        # No round trip: asyncpg's adapter only skips its BEGIN.
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        return await conn.run_sync(work)
                    await conn.begin()
                    result = await conn.run_sync(work)
                    committing = True
                    await conn.commit()
                    return result
            except (DBAPIError, OSError) as err:
                lost = isinstance(err, OSError) or bool(
                    isinstance(err, DBAPIError) and err.connection_invalidated)
                wait = next(waits, None)
                if committing or not lost or wait is None:
                    raise
                log.warning("database connection lost or refused (%s); trying again",
                            type(getattr(err, "orig", None) or err).__name__)
            await asyncio.sleep(wait)

    async def _tx(self, work: Callable[[Connection], T], doing: str,
                  single: bool = False) -> T:
        """Run ``work`` in one transaction; database errors become ``StoreError``."""
        try:
            if self._inline is not None:
                try:
                    return self._sync_tx(work, self._inline)
                except OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        raise
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, self._sync_tx, work)
            return await self._server_tx(work, single)
        except (SQLAlchemyError, OSError) as err:  # asyncpg raises OSError when refused
            raise StoreError(f"could not {doing}: {type(err).__name__}") from err
