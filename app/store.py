"""The model store: a SQLite registry of model versions and training jobs, plus files.

Layout under ``root``::

    lock                    held by the one process that has the store open
    registry.sqlite3        models, jobs and their epochs (JSON columns are TEXT)
    models/v0001.lvad       one artifact per registered version
    jobs/<job_id>/          data uploaded for a job (kept for LVAD_JOB_RETENTION_HOURS)
    tmp/                    artifacts being written by running jobs
    lost+found/             files found at start-up that no registry row knows

One connection is shared by the service's threads (``check_same_thread=False``,
WAL, ``synchronous=FULL``: a commit is on the disk when it returns, power loss
included); every statement runs under one lock, so a reader never sees another
thread's half-finished transaction. A file is published by a rename followed by an
fsync of its directory, before the commit that names it. Timestamps are ISO-8601
UTC strings.
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

from app.errors import NotFoundError, TooManyJobs, full_disk_is_507
from app.records import (
    EPOCHS_KEPT,
    FINISHED_STATES,
    JOB_FIELDS,
    JOB_STATES,
    SCHEMA,
    JobRecord,
    ModelRecord,
    job_from_row,
    model_from_row,
    model_row,
    utc_now,
)
from app.store_lock import StoreLock
from model.artifact import fsync_directory
from model.detector import Detector

__all__ = ["FINISHED_STATES", "JOB_STATES", "JobRecord", "ModelRecord", "Store", "utc_now"]


class Store:
    """Registry of model versions and jobs; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        """Open (or create) the store; StoreInUse if another process has it open."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._owner = StoreLock(self.root)
        try:
            for sub in ("models", "jobs", "tmp"):
                (self.root / sub).mkdir(exist_ok=True)
            registry = self.root / "registry.sqlite3"
            self.registry_was_missing = not registry.exists()
            self._lock = threading.RLock()
            self._db = sqlite3.connect(
                registry, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._move_history_to_epochs()
        except BaseException:
            self._owner.release()
            raise

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

    @property
    def lost_dir(self) -> Path:
        return self.root / "lost+found"

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.release()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, full_disk_is_507("the registry could not be written"):
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
                self.insert_model(
                    db, model_row(detector, version, file, source=source, job_id=job_id)
                )
                self._move_into(artifact, self.root / file)
                target = self.root / file
        except BaseException:
            if target is not None:  # moved, but the commit failed: give the file back
                _give_back(target, artifact)
            raise
        return self.get_model(version)

    @staticmethod
    def insert_model(db: sqlite3.Connection, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        db.execute(f"INSERT INTO models ({columns}) VALUES ({marks})", tuple(row.values()))

    def _move_into(self, source: Path, target: Path) -> None:
        """Rename ``source`` to ``target`` durably (both directories fsynced); a copy
        (fsynced before its rename) when they are on different file systems."""
        try:
            os.replace(source, target)
            fsync_directory(target.parent)
            fsync_directory(source.parent)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        staged = self.tmp_dir / f"import-{uuid.uuid4().hex}.lvad"  # other filesystem: copy
        try:
            shutil.copyfile(source, staged)
            with staged.open("rb+") as copy:
                os.fsync(copy.fileno())
            os.replace(staged, target)
            fsync_directory(target.parent)
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
        self,
        *,
        source: str,
        data_path: Path,
        params: dict,
        job_id: str | None = None,
        max_queued: int | None = None,
    ) -> JobRecord:
        """A new queued job; ``job_id`` (uuid4 hex by default) lets an upload land first.
        TooManyJobs if ``max_queued`` jobs are queued already."""
        job_id = job_id or uuid.uuid4().hex
        with self._transaction() as db:
            if max_queued is not None:
                queued = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
                if queued[0] >= max_queued:
                    raise TooManyJobs(
                        f"{queued[0]} jobs are queued already, the most there may be "
                        "(LVAD_MAX_QUEUED_JOBS): retry when one has started"
                    )
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
        return job_from_row(rows[0], self._histories([job_id])[job_id])

    def list_jobs(self, limit: int = 100) -> list[JobRecord]:
        """The latest ``limit`` jobs, newest first."""
        rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        histories = self._histories([r["id"] for r in rows])
        return [job_from_row(r, histories[r["id"]]) for r in rows]

    def _histories(self, job_ids: list[str]) -> dict[str, list[dict]]:
        histories: dict[str, list[dict]] = {job_id: [] for job_id in job_ids}
        marks = ", ".join("?" * len(job_ids))
        rows = self._query(
            f"SELECT job_id, report FROM epochs WHERE job_id IN ({marks}) ORDER BY job_id, epoch",
            tuple(job_ids),
        )
        for job_id, report in rows:
            histories[job_id].append(json.loads(report))
        return histories

    def add_epoch(self, job_id: str, report: dict[str, Any], progress: float) -> None:
        """Append one epoch's report (the latest EPOCHS_KEPT are kept) and set the progress:
        a few rows written per epoch, however long the history."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO epochs (job_id, epoch, report) VALUES (?, ?, ?)",
                (job_id, int(report["epoch"]), json.dumps(report)),
            )
            db.execute(
                "DELETE FROM epochs WHERE job_id = ? AND epoch <= ?",
                (job_id, int(report["epoch"]) - EPOCHS_KEPT),
            )
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (progress, job_id))

    def _move_history_to_epochs(self) -> None:
        """Registries written before the epochs table kept each job's history as one JSON
        column: move it into the table, once."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO epochs (job_id, epoch, report) SELECT jobs.id, "
                "json_extract(item.value, '$.epoch'), item.value "
                "FROM jobs, json_each(jobs.history) AS item WHERE jobs.history != '[]'"
            )
            db.execute("UPDATE jobs SET history = '[]' WHERE history != '[]'")

    def finished_jobs_before(self, cutoff: str) -> list[str]:
        """Ids of jobs that finished by ``cutoff`` (an ISO-8601 UTC time)."""
        rows = self._query(
            "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished <= ?", (cutoff,)
        )
        return [row[0] for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set some of: state, started, finished, progress, error, model_version,
        promoted, promotion_note."""
        unknown = sorted(set(fields) - JOB_FIELDS)
        if unknown:
            raise TypeError(f"update_job got unknown field(s): {', '.join(unknown)}")
        if "state" in fields and fields["state"] not in JOB_STATES:
            raise ValueError(f"unknown job state {fields['state']!r}")
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
    def fail_running_jobs(self, error: str) -> list[str]:
        """Mark every job left running as failed with ``error``; their ids."""
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            db.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished = ? WHERE state = 'running'",
                (error, utc_now()),
            )
        return ids

    def known_files(self) -> tuple[set[str], set[str]]:
        """(files the models table names, ids of the jobs table)."""
        with self._lock:
            files = {r[0] for r in self._db.execute("SELECT file FROM models")}
            jobs = {r[0] for r in self._db.execute("SELECT id FROM jobs")}
        return files, jobs


def _give_back(target: Path, original: Path) -> None:
    try:
        os.replace(target, original)
    except OSError:
        target.unlink(missing_ok=True)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
