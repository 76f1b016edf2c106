"""messages.usage_estimated: the tokens of an answer are chatbridge's own estimate
(the server reported no usage), so ``chatbridge usage`` can say so.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add messages.usage_estimated (NULL for the answers stored before it)."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("usage_estimated", sa.Boolean(), nullable=True))


def downgrade() -> None:
    """Drop messages.usage_estimated."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("usage_estimated")
