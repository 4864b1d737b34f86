"""Uploads: the finalizing state's retry clock, the refusal reason, the writer fence, part numbers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("error", sa.Text, nullable=True))
    op.add_column("uploads", sa.Column("writer", sa.String(64), nullable=True))
    op.add_column("uploads", sa.Column("next_part", sa.Integer, nullable=False, server_default="1"))
    op.add_column(
        "uploads",
        sa.Column("finalize_attempted_at", sa.DateTime(timezone=True), nullable=True),
    )
    # Uploads under way keep numbering their parts after those they stored.
    op.execute("UPDATE uploads SET next_part = jsonb_array_length(parts) + 1")


def downgrade() -> None:
    op.execute("UPDATE uploads SET state = 'active' WHERE state = 'finalizing'")
    op.execute("DELETE FROM uploads WHERE state = 'failed'")
    op.drop_column("uploads", "finalize_attempted_at")
    op.drop_column("uploads", "next_part")
    op.drop_column("uploads", "writer")
    op.drop_column("uploads", "error")
