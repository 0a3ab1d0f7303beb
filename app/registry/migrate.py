"""``lvad registry migrate --from STORE --to URL``: an embedded store into PostgreSQL.

Copies every model, version (its artifact as rows), job with its epochs, the data of
jobs that still have it, and the streams' alarm states, into an empty shared registry,
in one transaction: a failure leaves the target as it was. The store is opened as a
service opens it (its schema migrated first; StoreInUse while a service has it), and
is not changed. Jobs that were queued or running are copied as failed: they ran in
the old service's processes, and nothing of them is running now.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from app.registry import tables as t
from app.registry.records import JobState, utc_now
from app.registry.registry import Registry
from model.errors import LvadError

NOT_MIGRATED = "not finished when the store was migrated to PostgreSQL; submit it again"


@dataclass(frozen=True)
class Migrated:
    models: int
    versions: int
    jobs: int
    files: int


def migrate_store(store: Path, url: str) -> Migrated:
    """Copy the SQLite store ``store`` into the empty registry at ``url``."""
    if not (Path(store) / "registry.sqlite3").is_file():
        raise LvadError(f"{store} holds no registry (registry.sqlite3): nothing to migrate")
    source = Registry(store)
    try:
        with tempfile.TemporaryDirectory(prefix="lvad-migrate-") as cache:
            target = Registry(Path(cache), url)
            try:
                return _copy(source, target)
            finally:
                target.close()
    finally:
        source.close()


def _copy(source: Registry, target: Registry) -> Migrated:
    with source.engine.connect() as old:
        models = old.execute(sa.select(t.models)).mappings().all()
        versions = old.execute(sa.select(t.versions)).mappings().all()
        jobs = [
            dict(row) for row in old.execute(sa.select(t.jobs).order_by(t.jobs.c.seq)).mappings()
        ]
        epochs = old.execute(sa.select(t.job_epochs)).mappings().all()
        streams = old.execute(sa.select(t.stream_states)).mappings().all()
        old.rollback()
    files = 0
    with target.engine.begin() as new:
        if new.execute(sa.select(sa.func.count()).select_from(t.models)).scalar():
            raise LvadError("the target registry is not empty: migrate into a new database")
        if new.execute(sa.select(sa.func.count()).select_from(t.jobs)).scalar():
            raise LvadError("the target registry has jobs: migrate into a new database")
        _insert(new, t.models, [dict(row) for row in models])
        _insert(new, t.versions, [dict(row) for row in versions])
        for row in versions:
            target.files.store(new, row["file"], source.root / row["file"])
            files += 1
        for job in jobs:
            files += _copy_job(new, source, target, job)
        _insert(new, t.jobs, [_without_seq(job) for job in jobs])
        _insert(new, t.job_epochs, [dict(row) for row in epochs])
        _insert(new, t.stream_states, [dict(row) for row in streams])
    return Migrated(len(models), len(versions), len(jobs), files)


def _copy_job(new: sa.Connection, source: Registry, target: Registry, job: dict) -> int:
    """Make ``job`` fit the shared registry (its data as rows, keyed by the store path);
    the files copied."""
    if job["state"] in (JobState.QUEUED, JobState.RUNNING):
        job.update(state=JobState.FAILED, finished=utc_now(), error=NOT_MIGRATED)
    data = Path(job["data_path"])
    folder = source.root / "jobs" / job["id"]
    if not (data.is_file() and data.resolve().is_relative_to(folder.resolve())):
        return 0  # expired, or a file of the data directory: the record alone moves
    key = f"jobs/{job['id']}/{data.name}"
    target.files.store(new, key, data)
    job["data_path"] = key
    return 1


def _without_seq(job: dict) -> dict:
    return {key: value for key, value in job.items() if key != "seq"}


def _insert(db: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    if rows:
        db.execute(table.insert(), rows)
