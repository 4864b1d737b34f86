"""Initial schema: videos, renditions, transcode_jobs (outbox), uploads, redirector_config.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("tags", pg.ARRAY(sa.String(64)), nullable=False, server_default="{}"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("source_key", sa.String(512), nullable=True),
        sa.Column("source_size", sa.BigInteger, nullable=True),
        sa.Column("source_sha256", sa.String(64), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("has_video", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("has_audio", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("master_key", sa.String(512), nullable=True),
        sa.Column("poster_key", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('uploading','uploaded','queued','transcoding','ready','failed','deleted')",
            name="videos_state_valid",
        ),
    )
    op.create_index("ix_videos_state", "videos", ["state"])
    op.create_index("ix_videos_created_at", "videos", ["created_at"])

    op.create_table(
        "renditions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "video_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("bandwidth", sa.Integer, nullable=False),
        sa.Column("average_bandwidth", sa.Integer, nullable=False),
        sa.Column("codecs", sa.String(128), nullable=False),
        sa.Column("frame_rate", sa.Float, nullable=True),
        sa.Column("playlist_key", sa.String(512), nullable=False),
        sa.UniqueConstraint("video_id", "name"),
    )
    op.create_index("ix_renditions_video_id", "renditions", ["video_id"])

    op.create_table(
        "transcode_jobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "video_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("worker_mode", sa.String(8), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_transcode_jobs_video_id", "transcode_jobs", ["video_id"])
    op.create_index(
        "ix_transcode_jobs_unsent",
        "transcode_jobs",
        ["created_at"],
        postgresql_where=sa.text("sent_at IS NULL"),
    )

    op.create_table(
        "uploads",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("video_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("length", sa.BigInteger, nullable=True),
        sa.Column("offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("upload_metadata", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("storage_key", sa.String(512), nullable=False),
        sa.Column("storage_upload_id", sa.String(256), nullable=True),
        sa.Column("parts", pg.JSONB, nullable=False, server_default="[]"),
        sa.Column("is_partial", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("partials", pg.JSONB, nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_index("ix_uploads_expires_at", "uploads", ["expires_at"])

    op.create_table(
        "redirector_config",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cdn_host", sa.String(253), nullable=False),
        sa.Column("ratio", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False, server_default="302"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.CheckConstraint("ratio >= 1", name="redirector_ratio_positive"),
        sa.CheckConstraint("status_code IN (301, 302, 303, 307, 308)", name="redirector_status"),
    )


def downgrade() -> None:
    op.drop_table("redirector_config")
    op.drop_table("uploads")
    op.drop_table("transcode_jobs")
    op.drop_table("renditions")
    op.drop_table("videos")
