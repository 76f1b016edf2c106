"""Index the hot path so a turn costs the same however large the database grows:
answers found by their inbound event id, and the inbox's waiting events kept in a
partial index of their own (the claim never walks the events already answered).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Literal values, not parameters: a partial index is used only when the query's WHERE
# visibly implies this one (core/store/queue.py spells it the same way).
WAITING = sa.text("status IN ('received', 'processing') AND scope_key IS NOT NULL")


def upgrade() -> None:
    """Add ix_messages_event_id and the partial ix_inbound_events_waiting."""
    op.create_index("ix_messages_event_id", "messages", ["event_id"])
    op.create_index("ix_inbound_events_waiting", "inbound_events",
                    ["platform", "scope_key", "id"],
                    sqlite_where=WAITING, postgresql_where=WAITING)


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_inbound_events_waiting", table_name="inbound_events")
    op.drop_index("ix_messages_event_id", table_name="messages")
