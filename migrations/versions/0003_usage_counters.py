"""Usage counters for rate limits and daily token quotas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add usage_counters."""
    op.create_table(
        "usage_counters",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(600), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "subject", "period", "window_start",
                                name="pk_usage_counters"),
    )


def downgrade() -> None:
    """Drop usage_counters."""
    op.drop_table("usage_counters")
