"""Handoffs (conversations handed to staff), Telegram Business connections, chat pauses.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add handoffs, business connections and chat pauses."""
    op.create_table(
        "handoffs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("conversation_id", BigId, nullable=True),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("customer", sa.Text(), nullable=True),
        sa.Column("staff", sa.String(256), nullable=False),
        sa.Column("notice_ref", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_handoffs"),
    )
    op.create_index("uq_handoffs_open_key", "handoffs", ["platform", "scope_key"], unique=True,
                    sqlite_where=sa.text("status = 'open'"),
                    postgresql_where=sa.text("status = 'open'"))
    op.create_index("ix_handoffs_notice_ref", "handoffs", ["notice_ref"])
    op.create_index("ix_handoffs_status", "handoffs", ["status"])
    op.create_table(
        "business_connections",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("can_reply", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_business_connections"),
    )
    op.create_table(
        "chat_pauses",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform", "scope_key", name="pk_chat_pauses"),
    )


def downgrade() -> None:
    """Drop handoffs, business connections and chat pauses."""
    op.drop_table("chat_pauses")
    op.drop_table("business_connections")
    op.drop_index("ix_handoffs_status", table_name="handoffs")
    op.drop_index("ix_handoffs_notice_ref", table_name="handoffs")
    op.drop_index("uq_handoffs_open_key", table_name="handoffs")
    op.drop_table("handoffs")
