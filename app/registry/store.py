"""The model store: a SQLite registry of model versions and training jobs, plus files.

Layout under ``root``::

    registry.sqlite3        models and jobs (JSON columns are TEXT)
    models/v0001.lvad       one artifact per registered version
    jobs/<job_id>/          data uploaded for a job
    tmp/                    artifacts being written by running jobs

One connection is shared by the service's threads (``check_same_thread=False``,
WAL); every statement runs under one lock, so a reader never sees another
thread's half-finished transaction. Timestamps are ISO-8601 UTC strings.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.errors import NotFoundError
from app.registry.records import (
    FINISHED_STATES,
    INTERRUPTED,
    JOB_FIELDS,
    JOB_STATES,
    SCHEMA,
    JobRecord,
    ModelRecord,
    job_from_row,
    model_from_row,
    own_validation_loss,
    utc_now,
)
from model.detector import Detector

__all__ = ["FINISHED_STATES", "JOB_STATES", "JobRecord", "ModelRecord", "Store", "utc_now"]


class Store:
    """Registry of model versions and jobs; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("models", "jobs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / "registry.sqlite3", check_same_thread=False, isolation_level=None,
            timeout=30,
        )  # fmt: skip
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def job_dir(self, job_id: str) -> Path:
        """``jobs/<job_id>/``, created: where a job's uploaded data goes."""
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ models
    def register_model(
        self, artifact: Path, *, source: str, job_id: str | None = None
    ) -> ModelRecord:
        """Validate ``artifact``, move it to ``models/`` and register it as a new version.

        All or nothing: on any failure no row is added and no file is left in ``models/``.
        """
        artifact = Path(artifact)
        detector = Detector.load(artifact)  # ArtifactError if it is not a valid model
        target: Path | None = None
        try:
            with self._transaction() as db:
                row = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models").fetchone()
                version = int(row[0])
                file = f"models/v{version:04d}.lvad"
                db.execute(
                    "INSERT INTO models (version, file, created, job_id, source, validation_loss,"
                    " feature_names, window, threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (version, file, utc_now(), job_id, source, own_validation_loss(detector),
                     json.dumps(detector.feature_names), detector.window,
                     float(detector.threshold.value)),
                )  # fmt: skip
                self._move_into(artifact, self.root / file)
                target = self.root / file
        except BaseException:
            if target is not None:  # moved, but the commit failed: give the file back
                _give_back(target, artifact)
            raise
        return self.get_model(version)

    def _move_into(self, source: Path, target: Path) -> None:
        try:
            os.replace(source, target)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        staged = self.tmp_dir / f"import-{uuid.uuid4().hex}.lvad"  # other filesystem: copy
        try:
            shutil.copyfile(source, staged)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        source.unlink(missing_ok=True)

    def list_models(self) -> list[ModelRecord]:
        """Every version, newest first."""
        rows = self._query("SELECT * FROM models ORDER BY version DESC")
        return [model_from_row(r, self.root) for r in rows]

    def get_model(self, version: int) -> ModelRecord:
        rows = self._query("SELECT * FROM models WHERE version = ?", (version,))
        if not rows:
            raise NotFoundError(f"model version {version} not found")
        return model_from_row(rows[0], self.root)

    def active_version(self) -> int | None:
        rows = self._query("SELECT version FROM models WHERE active = 1")
        return int(rows[0][0]) if rows else None

    def set_active(self, version: int) -> ModelRecord:
        """Make ``version`` the only active one."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone() is None:
                raise NotFoundError(f"model version {version} not found")
            db.execute("UPDATE models SET active = 0 WHERE active = 1")
            db.execute("UPDATE models SET active = 1 WHERE version = ?", (version,))
        return self.get_model(version)

    def set_model_note(self, version: int, note: str) -> None:
        with self._transaction() as db:
            cursor = db.execute("UPDATE models SET note = ? WHERE version = ?", (note, version))
            if cursor.rowcount == 0:
                raise NotFoundError(f"model version {version} not found")

    # ------------------------------------------------------------------ jobs
    def create_job(
        self, *, source: str, data_path: Path, params: dict, job_id: str | None = None
    ) -> JobRecord:
        """A new queued job; ``job_id`` (uuid4 hex by default) lets an upload land first."""
        job_id = job_id or uuid.uuid4().hex
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, state, created, source, data_path, params)"
                " VALUES (?, 'queued', ?, ?, ?, ?)",
                (job_id, utc_now(), source, str(data_path), json.dumps(params)),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobRecord:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFoundError(f"job {job_id} not found")
        return job_from_row(rows[0])

    def list_jobs(self, limit: int = 100) -> list[JobRecord]:
        """The latest ``limit`` jobs, newest first."""
        rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [job_from_row(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set some of: state, started, finished, progress, history, error,
        model_version, promoted, promotion_note."""
        unknown = sorted(set(fields) - JOB_FIELDS)
        if unknown:
            raise TypeError(f"update_job got unknown field(s): {', '.join(unknown)}")
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
        if "history" in fields:
            fields["history"] = json.dumps(fields["history"])
        if fields:
            columns = ", ".join(f"{name} = ?" for name in fields)
            with self._transaction() as db:
                db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))
        return self.get_job(job_id)

    def claim_next_job(self) -> JobRecord | None:
        """Atomically move the oldest queued job to running and return it (None: none queued)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', started = ? WHERE id = ?", (utc_now(), row[0])
            )
        return self.get_job(row[0])

    def count_jobs_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, count in self._query("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = count
        return counts

    # ------------------------------------------------------------------ start-up
    def recover(self) -> list[str]:
        """Clean up after an unclean stop; call before any job runner starts.

        Jobs left running become failed; files in ``models/`` that no row points to,
        everything in ``tmp/``, and ``jobs/`` folders of jobs that do not exist are
        deleted. Returns the ids of the jobs it failed.
        """
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            db.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished = ? WHERE state = 'running'",
                (INTERRUPTED, utc_now()),
            )
        with self._lock:
            files = {r[0] for r in self._db.execute("SELECT file FROM models")}
            jobs = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
        for path in self.models_dir.iterdir():
            if path.relative_to(self.root).as_posix() not in files:
                _remove(path)
        for path in self.tmp_dir.iterdir():
            _remove(path)
        for path in (self.root / "jobs").iterdir():
            if path.name not in jobs:
                _remove(path)
        return ids


def _give_back(target: Path, original: Path) -> None:
    try:
        os.replace(target, original)
    except OSError:
        target.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
