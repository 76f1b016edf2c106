"""Feedback on answers, where replies appear on the platform, per-key settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add messages.platform_ref, feedback and scope_settings."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("platform_ref", sa.String(256), nullable=True))
        batch.create_index("ix_messages_platform_ref", ["platform_ref"])
    op.create_table(
        "feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("value", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"],
                                name="fk_feedback_message_id_messages", ondelete="CASCADE"),
        sa.UniqueConstraint("message_id", "user_id", name="uq_feedback_message_id_user_id"),
    )
    op.create_table(
        "scope_settings",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("platform", "scope_key", name="pk_scope_settings"),
    )


def downgrade() -> None:
    """Remove them again."""
    op.drop_table("scope_settings")
    op.drop_table("feedback")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_platform_ref")
        batch.drop_column("platform_ref")
