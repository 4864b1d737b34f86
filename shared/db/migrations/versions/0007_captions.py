"""Captions: one WebVTT track per video and language, published as an HLS subtitle rendition.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "captions",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "video_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("source_format", sa.String(4), nullable=False),
        sa.Column("cue_count", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("video_id", "language", name="captions_video_id_language_key"),
    )


def downgrade() -> None:
    op.drop_table("captions")
