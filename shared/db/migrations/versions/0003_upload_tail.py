"""Uploads: the not-yet-stored remainder of a tus upload (S3 parts need at least 5 MiB).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("tail_key", sa.String(512), nullable=True))
    op.add_column(
        "uploads", sa.Column("tail_bytes", sa.BigInteger, nullable=False, server_default="0")
    )
    op.create_index("ix_uploads_state", "uploads", ["state"])


def downgrade() -> None:
    op.drop_index("ix_uploads_state", "uploads")
    op.drop_column("uploads", "tail_bytes")
    op.drop_column("uploads", "tail_key")
