"""The store's engines and its one way of running a transaction (see ``core.store.store``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
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
        self._insert_attachment = self._insert(_att).on_conflict_do_nothing(
            index_elements=["sha256"]
        )

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

    @property
    def upsert(self) -> Callable[[Table], Any]:
        """The dialect's ``insert`` (with ``on_conflict_do_…``)."""
        return self._insert

    async def _server_tx(self, work: Callable[[Connection], T]) -> T:
        """A transaction on a database server; a connection lost before COMMIT is retried
        (twice, soon).

        The failed attempt never committed, so running ``work`` again cannot write twice.
        A failure during COMMIT is not retried: the server may have committed.
        """
        waits = iter(RECONNECT_WAITS)
        while True:
            committing = False
            try:
                async with self._engine.connect() as conn:
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

    async def _tx(self, work: Callable[[Connection], T], doing: str) -> T:
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
            return await self._server_tx(work)
        except (SQLAlchemyError, OSError) as err:  # asyncpg raises OSError when refused
            raise StoreError(f"could not {doing}: {type(err).__name__}") from err
