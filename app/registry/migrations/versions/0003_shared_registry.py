"""Scale-out: files as rows, and what workers record on a job.

``stored_files`` holds the model files and job data of a shared (PostgreSQL)
registry in chunks; an SQLite store leaves it empty and keeps its files on disk.
Jobs count their attempts on workers and carry the running attempt's heartbeat.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_files",
        sa.Column("path", sa.String(255), primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("heartbeat", sa.String(40)))
        batch.add_column(sa.Column("worker", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("worker")
        batch.drop_column("heartbeat")
        batch.drop_column("attempts")
    op.drop_table("stored_files")
