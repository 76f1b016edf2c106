"""Videos: sampled frames stored as attachments, marked with their video and frame rate.

Revision ID: 0016
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add messages.video_count and message_attachments.video / fps."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("video_count", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("message_attachments") as batch:
        batch.add_column(sa.Column("video", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("fps", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop the video columns (frames stay as plain images)."""
    with op.batch_alter_table("message_attachments") as batch:
        batch.drop_column("fps")
        batch.drop_column("video")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("video_count")
