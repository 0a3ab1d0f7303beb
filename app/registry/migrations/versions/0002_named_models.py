"""Named models: every version belongs to a name, each name has its own active version.

The versions of a single-model store become versions of ``default`` (same numbers,
same files, the active one stays active); jobs train the ``default`` model; each
job's epoch history moves from one JSON column, rewritten every epoch, to a row
per epoch.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DEFAULT = "default"


def _json(value: Any) -> Any:
    """A JSON column's value, whether the old column was declared JSON or TEXT."""
    return json.loads(value) if isinstance(value, str) else value


def upgrade() -> None:
    bind = op.get_bind()
    old = sa.Table("models", sa.MetaData(), autoload_with=bind)
    rows = bind.execute(sa.select(old).order_by(old.c.version)).mappings().all()
    op.drop_index("models_one_active", table_name="models")
    op.drop_table("models")
    models = op.create_table(
        "models",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("active_version", sa.Integer),
    )
    versions = op.create_table(
        "model_versions",
        sa.Column("name", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("validation_loss", sa.Float),
        sa.Column("feature_names", sa.JSON, nullable=False),
        sa.Column("window", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("note", sa.Text),
    )
    if rows:
        active = next((row["version"] for row in rows if row["active"]), None)
        first = min(row["created"] for row in rows)
        op.bulk_insert(models, [{"name": DEFAULT, "created": first, "active_version": active}])
        keep = [c.name for c in versions.columns if c.name not in ("name", "feature_names")]
        op.bulk_insert(
            versions,
            [
                {
                    "name": DEFAULT,
                    "feature_names": _json(row["feature_names"]),
                    **{key: row[key] for key in keep},
                }
                for row in rows
            ],
        )
    _jobs_per_model_and_epoch(bind)


def _jobs_per_model_and_epoch(bind: sa.Connection) -> None:
    jobs = sa.Table("jobs", sa.MetaData(), autoload_with=bind)
    histories = bind.execute(sa.select(jobs.c.id, jobs.c.history)).all()
    epochs = op.create_table(
        "job_epochs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    reports = [
        {"job_id": job_id, "epoch": int(report["epoch"]), "report": report}
        for job_id, history in histories
        for report in _json(history) or []
    ]
    if reports:
        op.bulk_insert(epochs, reports)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model", sa.String(63), nullable=False, server_default=DEFAULT))
        batch.drop_column("history")


def downgrade() -> None:
    raise RuntimeError("named models cannot be folded back into a single list of versions")
