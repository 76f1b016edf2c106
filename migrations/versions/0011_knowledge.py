"""Knowledge bases: kb_bases, kb_documents, kb_chunks (with a full-text index) and
message_sources (the passages an answer was given with).

SQLite: an external-content FTS5 table ``kb_chunks_fts`` kept in step by triggers.
PostgreSQL: ``kb_chunks.tsv`` (tsvector, filled with the base's text-search
configuration when chunks are stored) and a GIN index on it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE kb_chunks_fts USING fts5(heading, text, content='kb_chunks', "
    "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER kb_chunks_fts_insert AFTER INSERT ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); "
    "END",
    "CREATE TRIGGER kb_chunks_fts_delete AFTER DELETE ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, heading, text) "
    "VALUES ('delete', old.id, old.heading, old.text); END",
    "CREATE TRIGGER kb_chunks_fts_update AFTER UPDATE OF heading, text ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, heading, text) "
    "VALUES ('delete', old.id, old.heading, old.text); "
    "INSERT INTO kb_chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); "
    "END",
]


def upgrade() -> None:
    """Create the knowledge-base tables and their full-text index."""
    op.create_table(
        "kb_bases",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("embed_model", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_bases"),
        sa.UniqueConstraint("name", name="uq_kb_bases_name"),
    )
    op.create_table(
        "kb_documents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kb_id", BigId, nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kb_documents"),
        sa.ForeignKeyConstraint(["kb_id"], ["kb_bases.id"], ondelete="CASCADE",
                                name="fk_kb_documents_kb_id_kb_bases"),
    )
    op.create_index("uq_kb_documents_kb_id_source", "kb_documents", ["kb_id", "source"],
                    unique=True)
    op.create_table(
        "kb_chunks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kb_id", BigId, nullable=False),
        sa.Column("document_id", BigId, nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kb_chunks"),
        sa.ForeignKeyConstraint(["kb_id"], ["kb_bases.id"], ondelete="CASCADE",
                                name="fk_kb_chunks_kb_id_kb_bases"),
        sa.ForeignKeyConstraint(["document_id"], ["kb_documents.id"], ondelete="CASCADE",
                                name="fk_kb_chunks_document_id_kb_documents"),
    )
    op.create_index("ix_kb_chunks_kb_id", "kb_chunks", ["kb_id"])
    op.create_index("ix_kb_chunks_document_id", "kb_chunks", ["document_id"])
    op.create_table(
        "message_sources",
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("chunk_id", BigId, nullable=True),
        sa.Column("kb", sa.String(64), nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", "number", name="pk_message_sources"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_message_sources_message_id_messages"),
        sa.ForeignKeyConstraint(["chunk_id"], ["kb_chunks.id"], ondelete="SET NULL",
                                name="fk_message_sources_chunk_id_kb_chunks"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    else:
        op.add_column("kb_chunks", sa.Column("tsv", postgresql.TSVECTOR(), nullable=True))
        op.create_index("ix_kb_chunks_tsv", "kb_chunks", ["tsv"], postgresql_using="gin")


def downgrade() -> None:
    """Drop the knowledge-base tables, the full-text index and its triggers."""
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS kb_chunks_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS kb_chunks_fts")
    else:
        op.drop_index("ix_kb_chunks_tsv", table_name="kb_chunks")
    op.drop_table("message_sources")
    op.drop_index("ix_kb_chunks_document_id", table_name="kb_chunks")
    op.drop_index("ix_kb_chunks_kb_id", table_name="kb_chunks")
    op.drop_table("kb_chunks")
    op.drop_index("uq_kb_documents_kb_id_source", table_name="kb_documents")
    op.drop_table("kb_documents")
    op.drop_table("kb_bases")
