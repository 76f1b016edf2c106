"""Knowledge-base tables: bases, their documents, the chunks searched, answers' sources.

The full-text index lives outside these tables and is built by migration 0011: an FTS5
table (``kb_chunks_fts``, kept in step by triggers) on SQLite, a ``tsvector`` column with a
GIN index on PostgreSQL. ``schema_filter`` hides them from Alembic's drift check.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.store.models import Base, BigId, utcnow

__all__ = ["KnowledgeBase", "KnowledgeChunk", "KnowledgeDocument", "MessageSource",
           "schema_filter"]

FTS_TABLE = "kb_chunks_fts"


class KnowledgeBase(Base):
    """A named collection of documents a profile answers from."""

    __tablename__ = "kb_bases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # PostgreSQL text-search configuration (english, german, simple…).
    language: Mapped[str] = mapped_column(String(32), default="english")
    embed_model: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KnowledgeDocument(Base):
    """One indexed file or URL; ``content_hash`` decides whether it is indexed again."""

    __tablename__ = "kb_documents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(BigId, ForeignKey("kb_bases.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(String(512))
    content_hash: Mapped[str] = mapped_column(String(64))
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("uq_kb_documents_kb_id_source", "kb_id", "source", unique=True),)


class KnowledgeChunk(Base):
    """A passage: a document's section under its heading path."""

    __tablename__ = "kb_chunks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(BigId, ForeignKey("kb_bases.id", ondelete="CASCADE"))
    document_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("kb_documents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    # float32 little-endian, when the base has an embedding model
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_kb_chunks_kb_id", "kb_id"),
        Index("ix_kb_chunks_document_id", "document_id"),
    )


class MessageSource(Base):
    """A passage an answer was given with: its citation number and what it said then."""

    __tablename__ = "message_sources"

    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("kb_chunks.id", ondelete="SET NULL"))
    kb: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(String(512))
    heading: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)


def schema_filter(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Alembic ``include_name``: leave out the full-text index objects of migration 0011."""
    if type_ == "table" and name is not None and name.startswith(FTS_TABLE):
        return False
    if type_ == "column" and name == "tsv" and parent_names.get("table_name") == "kb_chunks":
        return False
    return not (type_ == "index" and name == "ix_kb_chunks_tsv")
