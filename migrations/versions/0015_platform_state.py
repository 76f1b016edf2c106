"""Platform state shared by replicas: what a person looks at, which DM surface an app uses.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add platform_state (one small JSON value per platform and key)."""
    op.create_table(
        "platform_state",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("stamp", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform", "key", name="pk_platform_state"),
    )


def downgrade() -> None:
    """Drop platform_state."""
    op.drop_table("platform_state")
