"""The registry before named models: one numbered list of versions, one active.

Stores created before migrations existed hold exactly this schema; the registry
stamps them with this revision instead of running it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("validation_loss", sa.Float),
        sa.Column("feature_names", sa.JSON, nullable=False),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("active", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.Text),
    )
    op.create_index(
        "models_one_active",
        "models",
        ["active"],
        unique=True,
        sqlite_where=sa.text("active = 1"),
        postgresql_where=sa.text("active = 1"),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("started", sa.Text),
        sa.Column("finished", sa.Text),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("data_path", sa.Text, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("history", sa.JSON, nullable=False, server_default="[]"),
        sa.Column("error", sa.Text),
        sa.Column("model_version", sa.Integer),
        sa.Column("promoted", sa.Boolean),
        sa.Column("promotion_note", sa.Text),
    )
    op.create_index("jobs_state", "jobs", ["state", "seq"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("models")
