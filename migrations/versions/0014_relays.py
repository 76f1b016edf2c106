"""The relay ledger: relays to and from staff, claimed with a lease and marked sent.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the relays table."""
    op.create_table(
        "relays",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("handoff_id", BigId, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ref", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_relays"),
        sa.UniqueConstraint("platform", "key", name="uq_relays_platform_key"),
    )
    op.create_index("ix_relays_status_lease_until", "relays", ["status", "lease_until"])
    op.create_index("ix_relays_ref", "relays", ["ref"])


def downgrade() -> None:
    """Drop the relays table."""
    op.drop_index("ix_relays_ref", table_name="relays")
    op.drop_index("ix_relays_status_lease_until", table_name="relays")
    op.drop_table("relays")
