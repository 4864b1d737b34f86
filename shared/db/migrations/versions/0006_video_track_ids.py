"""Streaming-gateway track ids: the string id an old client asks for a video by.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("videos", sa.Column("track_id", sa.String(64), nullable=True))
    op.create_check_constraint(
        "videos_track_id_valid", "videos", "track_id ~ '^[A-Za-z0-9._-]{1,64}$'"
    )
    op.create_index("ix_videos_track_id", "videos", ["track_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_videos_track_id", "videos")
    op.drop_constraint("videos_track_id_valid", "videos")
    op.drop_column("videos", "track_id")
