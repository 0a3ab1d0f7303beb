"""The registry's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

A model is a name with numbered versions; each name has at most one active
version. Jobs train a version of a name. Timestamps are ISO-8601 UTC strings;
JSON columns hold lists and dicts. The schema is created and migrated by
Alembic (``app/registry/migrations``), never by ``metadata.create_all``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("active_version", sa.Integer, nullable=True),
)

versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("name", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("file", sa.Text, nullable=False),  # the artifact, relative to the store
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("validation_loss", sa.Float, nullable=True),
    sa.Column("feature_names", sa.JSON, nullable=False),
    sa.Column("window", sa.Integer, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("started", sa.String(40), nullable=True),
    sa.Column("finished", sa.String(40), nullable=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("data_path", sa.Text, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("promoted", sa.Boolean, nullable=True),
    sa.Column("promotion_note", sa.Text, nullable=True),
    # scale-out (app/registry/claims.py): the tries on workers, the running one's last
    # sign of life, and which worker runs it
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("heartbeat", sa.String(40), nullable=True),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Index("jobs_state", "state", "seq"),
)

job_epochs = sa.Table(
    "job_epochs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("report", sa.JSON, nullable=False),
)

# Scale-out (PostgreSQL): the store's files as rows, in chunks, keyed by their path
# relative to the store (``models/db/v0001.lvad``, ``jobs/<id>/data.csv``); each replica
# and worker caches them under its own LVAD_STORE (app/registry/files.py).
stored_files = sa.Table(
    "stored_files",
    metadata,
    sa.Column("path", sa.String(255), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# the alarm state of each stream a model scores (``ScoreRequest.stream``, pull mode's
# groups): model/stream.py's StreamState as JSON, for the version that advanced it
stream_states = sa.Table(
    "stream_states",
    metadata,
    sa.Column("name", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),  # +1 per save: concurrent saves fail
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)
