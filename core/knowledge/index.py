"""Knowledge bases in SQL: create, index documents (only what changed), list, remove.

Runs its transactions through the ``Store`` (the same engine and the same SQLite
hot path). Searching is in ``core.knowledge.search``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from core.errors import ConfigError
from core.knowledge.chunking import Chunk
from core.knowledge.convert import Document, content_hash
from core.knowledge.models import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from core.store import Store
from core.store.models import utcnow

__all__ = ["LANGUAGES", "BaseInfo", "DocumentInfo", "KnowledgeIndex", "check_name"]

_bases: Table = KnowledgeBase.__table__  # type: ignore[assignment]
_docs: Table = KnowledgeDocument.__table__  # type: ignore[assignment]
_chunks: Table = KnowledgeChunk.__table__  # type: ignore[assignment]

# PostgreSQL's built-in text-search configurations (SQLite's FTS5 uses one Porter
# stemmer and Unicode tokenizer for every base).
LANGUAGES = frozenset({
    "simple", "arabic", "armenian", "basque", "catalan", "danish", "dutch", "english",
    "finnish", "french", "german", "greek", "hindi", "hungarian", "indonesian", "irish",
    "italian", "lithuanian", "nepali", "norwegian", "portuguese", "romanian", "russian",
    "serbian", "spanish", "swedish", "tamil", "turkish", "yiddish",
})

_PG_TSV = text(
    "UPDATE kb_chunks SET tsv = setweight(to_tsvector(CAST(:cfg AS regconfig), heading), 'A')"
    " || to_tsvector(CAST(:cfg AS regconfig), text) WHERE document_id = :doc"
)


def check_name(name: str) -> str:
    """A knowledge base's name: letters, digits, ``-`` and ``_``, at most 64."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ConfigError(f"knowledge base name {name!r}: use letters, digits, '-', '_' or "
                          "'.' (at most 64 characters)")
    return name


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """A knowledge base as ``kb list`` shows it."""

    name: str
    language: str
    embed_model: str | None
    documents: int
    chunks: int
    embedded: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """An indexed document."""

    source: str
    title: str
    chunks: int
    indexed_at: datetime


class KnowledgeIndex:
    """Writes and reads knowledge bases through a ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def store(self) -> Store:
        """The store the bases live in."""
        return self._store

    async def ensure_base(self, name: str, *, language: str = "english",
                          embed_model: str | None = None) -> int:
        """The base's id, created when new (its language and model are kept after)."""
        check_name(name)
        if language not in LANGUAGES:
            raise ConfigError(f"unknown language {language!r} (known: "
                              f"{', '.join(sorted(LANGUAGES))})")

        def work(conn: Connection) -> int:
            found = conn.execute(select(_bases.c.id, _bases.c.embed_model)
                                 .where(_bases.c.name == name)).first()
            if found is not None:
                if embed_model and found.embed_model != embed_model:
                    # Vectors of two models cannot be compared: the old ones are dropped
                    # and every document is embedded again.
                    conn.execute(update(_bases).where(_bases.c.id == found.id)
                                 .values(embed_model=embed_model))
                    conn.execute(update(_docs).where(_docs.c.kb_id == found.id)
                                 .values(content_hash=""))
                return int(found.id)
            now = utcnow()
            row = conn.execute(insert(_bases).values(
                name=name, language=language, embed_model=embed_model, created_at=now,
                updated_at=now).returning(_bases.c.id)).scalar_one()
            return int(row)

        return await self._store.run(work, "create the knowledge base")

    async def unchanged(self, kb_id: int, documents: Sequence[Document]) -> set[str]:
        """Sources among ``documents`` already indexed with the same content."""
        wanted = {d.source: content_hash(d.markdown) for d in documents}

        def work(conn: Connection) -> set[str]:
            rows = conn.execute(select(_docs.c.source, _docs.c.content_hash)
                                .where(_docs.c.kb_id == kb_id)).all()
            return {r.source for r in rows if wanted.get(r.source) == r.content_hash}

        return await self._store.run(work, "read the knowledge base")

    async def put_document(
        self, kb_id: int, document: Document, chunks: Sequence[Chunk],
        vectors: Sequence[bytes | None] | None = None,
    ) -> None:
        """Replace the document's chunks with ``chunks`` (and their vectors), atomically."""
        digest = content_hash(document.markdown)
        embeddings = list(vectors) if vectors is not None else [None] * len(chunks)

        def work(conn: Connection) -> None:
            now = utcnow()
            old = (select(_docs.c.id)
                   .where(_docs.c.kb_id == kb_id, _docs.c.source == document.source)
                   .scalar_subquery())
            conn.execute(delete(_chunks).where(_chunks.c.document_id == old))
            conn.execute(delete(_docs).where(_docs.c.kb_id == kb_id,
                                             _docs.c.source == document.source))
            doc_id = conn.execute(insert(_docs).values(
                kb_id=kb_id, source=document.source, title=document.title[:512],
                content_hash=digest, chunk_count=len(chunks), indexed_at=now,
            ).returning(_docs.c.id)).scalar_one()
            if chunks:
                conn.execute(insert(_chunks), [
                    {"kb_id": kb_id, "document_id": doc_id, "ordinal": i,
                     "heading": c.heading or document.title, "text": c.text,
                     "embedding": v}
                    for i, (c, v) in enumerate(zip(chunks, embeddings, strict=True))
                ])
            if conn.dialect.name == "postgresql":
                language = conn.execute(select(_bases.c.language)
                                        .where(_bases.c.id == kb_id)).scalar_one()
                conn.execute(_PG_TSV, {"cfg": language, "doc": doc_id})
            conn.execute(update(_bases).where(_bases.c.id == kb_id).values(updated_at=now))

        await self._store.run(work, "store the document")

    async def analyze(self) -> None:
        """Refresh the planner's statistics after a large change (PostgreSQL; SQLite's
        FTS5 needs none), so searches use the GIN index from the first question on."""
        if self._store.engine.dialect.name == "postgresql":
            await self._store.run(lambda conn: conn.execute(text("ANALYZE kb_chunks")),
                                  "analyze the knowledge base")

    async def remove_sources(self, name: str, sources: Sequence[str]) -> int:
        """Remove documents from a base; how many were there."""

        def work(conn: Connection) -> int:
            kb_id = conn.execute(select(_bases.c.id).where(_bases.c.name == name)).scalar()
            if kb_id is None:
                return 0
            old = select(_docs.c.id).where(_docs.c.kb_id == kb_id,
                                           _docs.c.source.in_(list(sources)))
            conn.execute(delete(_chunks).where(_chunks.c.document_id.in_(old)))
            gone = conn.execute(delete(_docs).where(_docs.c.kb_id == kb_id,
                                                    _docs.c.source.in_(list(sources))))
            conn.execute(update(_bases).where(_bases.c.id == kb_id).values(updated_at=utcnow()))
            return int(gone.rowcount or 0)

        return await self._store.run(work, "remove documents")

    async def remove(self, name: str) -> bool:
        """Delete a whole base (its documents and chunks); ``False`` if there was none."""

        def work(conn: Connection) -> bool:
            kb_id = conn.execute(select(_bases.c.id).where(_bases.c.name == name)).scalar()
            if kb_id is None:
                return False
            # Chunks first, in one statement each, so SQLite's FTS triggers see them go.
            conn.execute(delete(_chunks).where(_chunks.c.kb_id == kb_id))
            conn.execute(delete(_docs).where(_docs.c.kb_id == kb_id))
            conn.execute(delete(_bases).where(_bases.c.id == kb_id))
            return True

        return await self._store.run(work, "remove the knowledge base")

    async def bases(self) -> list[BaseInfo]:
        """Every base, with its counts."""

        def work(conn: Connection) -> list[BaseInfo]:
            docs = (select(_docs.c.kb_id, func.count().label("n")).group_by(_docs.c.kb_id)
                    .subquery())
            chunks = (select(_chunks.c.kb_id, func.count().label("n"),
                             func.count(_chunks.c.embedding).label("e"))
                      .group_by(_chunks.c.kb_id).subquery())
            rows = conn.execute(
                select(_bases, docs.c.n.label("docs"), chunks.c.n.label("chunks"),
                       chunks.c.e.label("embedded"))
                .outerjoin(docs, docs.c.kb_id == _bases.c.id)
                .outerjoin(chunks, chunks.c.kb_id == _bases.c.id)
                .order_by(_bases.c.name)).all()
            return [BaseInfo(r.name, r.language, r.embed_model, r.docs or 0, r.chunks or 0,
                             r.embedded or 0, r.updated_at) for r in rows]

        return await self._store.run(work, "list the knowledge bases")

    async def documents(self, name: str) -> list[DocumentInfo]:
        """The documents of one base."""

        def work(conn: Connection) -> list[DocumentInfo]:
            rows = conn.execute(
                select(_docs).join(_bases, _bases.c.id == _docs.c.kb_id)
                .where(_bases.c.name == name).order_by(_docs.c.source)).all()
            return [DocumentInfo(r.source, r.title, r.chunk_count, r.indexed_at)
                    for r in rows]

        return await self._store.run(work, "list the documents")
