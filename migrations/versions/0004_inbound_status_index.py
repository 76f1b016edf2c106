"""Index inbound events by status (inbox depth, and the leases to come).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ix_inbound_events_status."""
    op.create_index("ix_inbound_events_status", "inbound_events", ["status"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_inbound_events_status", table_name="inbound_events")
