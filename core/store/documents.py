"""Documents in SQL: each posted file's extracted text, stored once by its SHA-256."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Table, select

from core.media.documents import Extracted
from core.store.models import DocumentRow, utcnow

if TYPE_CHECKING:
    from core.store.store import Store

__all__ = ["DocumentStore"]

_docs: Table = DocumentRow.__table__  # type: ignore[assignment]


class DocumentStore:
    """Finds a file's text by hash (so a file posted again is not converted again) and
    keeps new ones."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def find(self, sha256: str) -> Extracted | None:
        """The stored text of the file with this hash, if it was read before."""
        def work(conn: Connection) -> Extracted | None:
            row = conn.execute(select(_docs.c.name, _docs.c.kind, _docs.c.size,
                                      _docs.c.pages, _docs.c.text)
                               .where(_docs.c.sha256 == sha256)).first()
            if row is None:
                return None
            return Extracted(sha256=sha256, name=row.name, kind=row.kind, size=row.size,
                             pages=row.pages, text=row.text)
        return await self._store.run(work, "reading a document")

    async def keep(self, doc: Extracted) -> None:
        """Store a document's text (a second writer of the same file changes nothing)."""
        statement = self._store.upsert(_docs).values(
            sha256=doc.sha256, name=doc.name[:255], kind=doc.kind, size=doc.size,
            pages=doc.pages, text=doc.text, created_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["sha256"])

        def work(conn: Connection) -> None:
            conn.execute(statement)
        await self._store.run(work, "storing a document")
