"""Platform order and visible replies: inbound events and messages carry the platform's
sort key (Slack ``ts``, Telegram ``date`` then ``message_id``); an inbound event keeps the
platform ids of the reply messages a turn has shown so far.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add inbound_events.sort_key, inbound_events.shown and messages.sort_key."""
    with op.batch_alter_table("inbound_events") as batch:
        batch.add_column(sa.Column("sort_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("shown", sa.Text(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sort_key", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sort_key")
    with op.batch_alter_table("inbound_events") as batch:
        batch.drop_column("shown")
        batch.drop_column("sort_key")
