"""The inbox: inbound events keep their payload and are claimed under a lease per
conversation key; replies that could not be delivered wait in the outbox.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the inbox columns, inbox_leases and outbox."""
    with op.batch_alter_table("inbound_events") as batch:
        batch.add_column(sa.Column("scope_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("payload", sa.Text(), nullable=True))
        batch.add_column(sa.Column("available_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("message_id", BigId, nullable=True))
    op.create_index("ix_inbound_events_platform_scope_key_status", "inbound_events",
                    ["platform", "scope_key", "status"])
    op.create_table(
        "inbox_leases",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform", "scope_key", name="pk_inbox_leases"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_status", "outbox", ["status"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_outbox_status", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("inbox_leases")
    op.drop_index("ix_inbound_events_platform_scope_key_status", table_name="inbound_events")
    with op.batch_alter_table("inbound_events") as batch:
        for column in ("message_id", "lease_owner", "attempts", "available_at", "payload",
                       "scope_key"):
            batch.drop_column(column)
