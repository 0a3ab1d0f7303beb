"""The model registry: named models, their versions and training jobs, with their files.

Layout under ``root`` (the store, ``LVAD_STORE``)::

    lock                        held by the one process that has the store open
    registry.sqlite3            names, versions, jobs, epochs (app/registry/tables.py)
    models/<name>/v0001.lvad    one artifact per registered version
    models/v0001.lvad           versions of ``default`` made before named models
    jobs/<job_id>/              data uploaded for a job (kept LVAD_JOB_RETENTION_HOURS)
    tmp/                        artifacts being written by running jobs
    lost+found/                 files found at start-up that no registry row knows

With ``url`` (scale-out, ``LVAD_REGISTRY_URL``) the tables are in PostgreSQL, shared by
every replica and worker, and so are the files (``app/registry/files.py``): ``root``
is then this process's cache of them, not locked, and holds no registry database.

Every method is one transaction; writes take SQLite's write lock first, and a commit
is on the disk when it returns (``app/registry/database.py``). A file is published
by a rename followed by an fsync of its directories, before the commit that names
it. A write that finds the disk full raises StorageFull (507). Records are frozen
dataclasses (``app/registry/records.py``).
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.errors import NotFoundError, TooManyJobs, full_disk_is_507
from app.registry import tables as t
from app.registry.database import (
    QUEUE_LOCK,
    check_current,
    postgres_engine,
    sqlite_engine,
    upgrade,
)
from app.registry.files import DatabaseFiles, LocalFiles
from app.registry.records import (
    EPOCHS_KEPT,
    JOB_FIELDS,
    JobRecord,
    JobState,
    ModelRecord,
    VersionRecord,
    check_model_name,
    job_record,
    own_validation_loss,
    utc_now,
    version_record,
)
from app.registry.store_lock import StoreLock
from app.settings import Settings
from model.artifact import fsync_directory
from model.detector import Detector
from model.errors import LvadError


class Registry:
    """Names, versions and jobs of one store; see the module docstring for the layout."""

    def __init__(self, root: Path, url: str | None = None, pool_size: int = 5) -> None:
        """Open (or create) the store; StoreInUse if another process has it open. With
        ``url``, the shared registry at that PostgreSQL URL, ``root`` its local cache."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared = url is not None
        self._owner: StoreLock | None = None if self.shared else StoreLock(self.root)
        try:
            for sub in ("models", "jobs", "tmp"):
                (self.root / sub).mkdir(exist_ok=True)
            if url is None:
                database = self.root / "registry.sqlite3"
                self.registry_was_missing = not database.exists()
                self.engine = sqlite_engine(database)
            else:
                self.registry_was_missing = False
                self.engine = postgres_engine(url, pool_size)
            upgrade(self.engine)
            self.files = DatabaseFiles(self.engine, self.root) if url else LocalFiles(self.root)
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(cls, settings: Settings) -> Registry:
        """The registry the settings name: LVAD_REGISTRY_URL, else SQLite in LVAD_STORE."""
        url = settings.registry_url
        return cls(
            settings.store, None if url is None else url.get_secret_value(),
            settings.registry_pool_size,
        )  # fmt: skip

    @classmethod
    def read_only(cls, root: Path) -> Registry:
        """The store as another process may have it open: no lock, no recovery, nothing
        written (only reads; LvadError if the store is missing or its schema is not the
        current one: start the service once on it)."""
        registry = cls.__new__(cls)
        registry.root = Path(root)
        database = registry.root / "registry.sqlite3"
        if not database.is_file():
            raise LvadError(f"no model store at {root} (LVAD_STORE)")
        registry.registry_was_missing = False
        registry._owner, registry.shared = None, False
        registry.engine = sqlite_engine(database)
        registry.files = LocalFiles(registry.root)
        check_current(registry.engine)
        return registry

    def local_file(self, record: VersionRecord) -> Path:
        """A version's artifact on this machine (fetched from a shared registry first)."""
        return self.files.local(record.path.relative_to(self.root).as_posix())

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
        self.engine.dispose()
        self._release()

    def _release(self) -> None:
        if self._owner is not None:
            self._owner.release()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with full_disk_is_507("the registry could not be written"), self.engine.begin() as db:
            yield db

    def _read(self, statement: sa.Executable) -> list[sa.RowMapping]:
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
            connection.rollback()
        return list(rows)

    # ------------------------------------------------------------------ models
    def register_version(
        self,
        name: str,
        artifact: Path,
        *,
        source: str,
        job_id: str | None = None,
        within: Callable[[sa.Connection, int], None] | None = None,
    ) -> VersionRecord:
        """Validate ``artifact``, move it under ``models/<name>/`` and register it as the
        name's next version (creating the name); ``within(db, version)`` runs in the same
        transaction (a worker finishing its job). All or nothing: on any failure no row
        is added and no file is left in ``models/``."""
        check_model_name(name)
        artifact = Path(artifact)
        detector = Detector.load(artifact)  # ArtifactError if it is not a valid model
        target: Path | None = None
        try:
            with self._write() as db:
                self._ensure_model(db, name)
                version = _next_version(db, name)
                file = f"models/{name}/v{version:04d}.lvad"
                db.execute(
                    t.versions.insert().values(
                        name=name, version=version, file=file, created=utc_now(),
                        job_id=job_id, source=source,
                        validation_loss=own_validation_loss(detector),
                        feature_names=detector.feature_names, window=detector.window,
                        threshold=float(detector.threshold.value),
                    )
                )  # fmt: skip
                self.files.store(db, file, artifact)
                if within is not None:
                    within(db, version)
                (self.models_dir / name).mkdir(exist_ok=True)
                self._move_into(artifact, self.root / file)
                target = self.root / file
        except BaseException:
            if target is not None:  # moved, but the commit failed: give the file back
                _give_back(target, artifact)
            raise
        return self.get_version(name, version)

    def _ensure_model(self, db: sa.Connection, name: str) -> None:
        """Create the name if it is new, and hold its row until the transaction ends: two
        writers of one name on PostgreSQL then number their versions one after the
        other (on SQLite the write lock already does)."""
        dialect = postgresql if self.shared else sqlite
        db.execute(
            dialect.insert(t.models)
            .values(name=name, created=utc_now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        db.execute(sa.select(t.models.c.name).where(t.models.c.name == name).with_for_update())

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
        """Every name, alphabetically, with its active version (if any)."""
        active = t.versions.alias("active")
        statement = (
            sa.select(t.models, active)
            .join(
                active,
                (active.c.name == t.models.c.name)
                & (active.c.version == t.models.c.active_version),
                isouter=True,
            )
            .order_by(t.models.c.name)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
            counts = dict(
                connection.execute(
                    sa.select(t.versions.c.name, sa.func.count()).group_by(t.versions.c.name)
                ).all()
            )
            connection.rollback()
        width = len(t.models.columns)
        return [self._model(row[:width], row[width:], counts.get(row[0], 0)) for row in rows]

    def _model(self, model: Any, active: Any, count: int) -> ModelRecord:
        name, created, active_version = model
        record = None
        if active_version is not None:
            values = dict(zip(t.versions.columns.keys(), active, strict=True))
            record = version_record(values, self.root, active_version)
        return ModelRecord(name, created, active_version, count, record)

    def get_model(self, name: str) -> ModelRecord:
        for model in self.list_models():  # a handful of names: one query for all
            if model.name == name:
                return model
        raise NotFoundError(f"model {name!r} not found", field="name")

    def list_versions(self, name: str) -> list[VersionRecord]:
        """Every version of ``name``, newest first."""
        active = self.get_model(name).active_version
        rows = self._read(
            sa.select(t.versions)
            .where(t.versions.c.name == name)
            .order_by(t.versions.c.version.desc())
        )
        return [version_record(row, self.root, active) for row in rows]

    def get_version(self, name: str, version: int) -> VersionRecord:
        rows = self._read(
            sa.select(t.versions, t.models.c.active_version)
            .join(t.models, t.models.c.name == t.versions.c.name)
            .where(_version_is(name, version))
        )
        if not rows:
            self.get_model(name)  # an unknown name says so
            raise NotFoundError(f"model {name!r} has no version {version}", field="version")
        return version_record(rows[0], self.root, rows[0]["active_version"])

    def active_versions(self) -> dict[str, int]:
        """Every name that has an active version: name -> version."""
        rows = self._read(
            sa.select(t.models.c.name, t.models.c.active_version).where(
                t.models.c.active_version.is_not(None)
            )
        )
        return {row["name"]: row["active_version"] for row in rows}

    def set_active(self, name: str, version: int) -> VersionRecord:
        """Make ``version`` the active version of ``name`` (NotFoundError if there is none)."""
        with self._write() as db:
            db.execute(
                t.models.update()
                .where(t.models.c.name == name)
                .where(sa.exists().where(_version_is(name, version)))
                .values(active_version=version)
            )
        return self.get_version(name, version)

    def set_version_note(self, name: str, version: int, note: str) -> None:
        with self._write() as db:
            done = db.execute(
                t.versions.update().where(_version_is(name, version)).values(note=note)
            )
        if done.rowcount == 0:
            self.get_version(name, version)  # raises NotFoundError

    # ------------------------------------------------------------------ jobs
    def create_job(
        self,
        *,
        model: str,
        source: str,
        data_path: Path,
        params: dict,
        job_id: str | None = None,
        max_queued: int | None = None,
    ) -> JobRecord:
        """A new queued job training ``model`` (a new name is created, with no version until
        a job registers one); ``job_id`` (uuid4 hex by default) lets an upload land first.
        TooManyJobs if ``max_queued`` jobs are queued already."""
        check_model_name(model)
        row = {
            "id": job_id or uuid.uuid4().hex, "model": model, "state": JobState.QUEUED,
            "created": utc_now(), "started": None, "finished": None, "source": source,
            "data_path": str(data_path), "params": params, "progress": 0.0, "error": None,
            "model_version": None, "promoted": None, "promotion_note": None,
        }  # fmt: skip
        with self._write() as db:
            if max_queued is not None:
                if self.shared:  # replicas adding jobs at once count in turn
                    db.execute(sa.select(sa.func.pg_advisory_xact_lock(QUEUE_LOCK)))
                queued = db.execute(
                    sa.select(sa.func.count()).where(t.jobs.c.state == JobState.QUEUED)
                ).scalar()
                if queued >= max_queued:
                    raise TooManyJobs(
                        f"{queued} jobs are queued already, the most there may be "
                        "(LVAD_MAX_QUEUED_JOBS): retry when one has started"
                    )
            self._ensure_model(db, model)
            db.execute(t.jobs.insert().values(**row))
        return job_record(row, [])  # as inserted: a runner may claim it at once

    def get_job(self, job_id: str) -> JobRecord:
        rows = self._read(sa.select(t.jobs).where(t.jobs.c.id == job_id))
        if not rows:
            raise NotFoundError(f"job {job_id} not found", field="id")
        return job_record(rows[0], self._epochs([job_id]).get(job_id, []))

    def list_jobs(self, limit: int = 100, model: str | None = None) -> list[JobRecord]:
        """The latest ``limit`` jobs (of ``model``, or of every model), newest first."""
        statement = sa.select(t.jobs).order_by(t.jobs.c.seq.desc()).limit(limit)
        if model is not None:
            statement = statement.where(t.jobs.c.model == model)
        rows = self._read(statement)
        epochs = self._epochs([row["id"] for row in rows])
        return [job_record(row, epochs.get(row["id"], [])) for row in rows]

    def _epochs(self, job_ids: list[str]) -> dict[str, list[dict]]:
        if not job_ids:
            return {}
        rows = self._read(
            sa.select(t.job_epochs)
            .where(t.job_epochs.c.job_id.in_(job_ids))
            .order_by(t.job_epochs.c.job_id, t.job_epochs.c.epoch)
        )
        history: dict[str, list[dict]] = {}
        for row in rows:
            history.setdefault(row["job_id"], []).append(row["report"])
        return history

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set some of: state, started, finished, progress, error, model_version, promoted,
        promotion_note."""
        unknown = sorted(set(fields) - JOB_FIELDS)
        if unknown:
            raise TypeError(f"update_job got unknown field(s): {', '.join(unknown)}")
        if "state" in fields:
            fields["state"] = JobState(fields["state"])  # ValueError names a bad state
        if fields:
            with self._write() as db:
                db.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(**fields))
        return self.get_job(job_id)

    def add_epoch(self, job_id: str, report: dict, progress: float) -> None:
        """Append one epoch's report to a job's history and set its progress: a few rows
        written per epoch, however long the history (the latest EPOCHS_KEPT are kept)."""
        epoch = int(report["epoch"])
        epochs = t.job_epochs
        with self._write() as db:
            db.execute(epochs.insert().values(job_id=job_id, epoch=epoch, report=report))
            db.execute(
                epochs.delete().where(
                    (epochs.c.job_id == job_id) & (epochs.c.epoch <= epoch - EPOCHS_KEPT)
                )
            )
            db.execute(t.jobs.update().where(t.jobs.c.id == job_id).values(progress=progress))

    def finished_jobs_before(self, cutoff: str) -> list[str]:
        """Ids of jobs that finished by ``cutoff`` (an ISO-8601 UTC time)."""
        finished = t.jobs.c.finished
        rows = self._read(
            sa.select(t.jobs.c.id).where(finished.is_not(None) & (finished <= cutoff))
        )
        return [row["id"] for row in rows]

    def claim_next_job(self) -> JobRecord | None:
        """Atomically move the oldest queued job to running and return it (None: none queued)."""
        with self._write() as db:
            job_id = db.execute(
                sa.select(t.jobs.c.id)
                .where(t.jobs.c.state == JobState.QUEUED)
                .order_by(t.jobs.c.seq)
                .limit(1)
            ).scalar()
            if job_id is None:
                return None
            db.execute(
                t.jobs.update()
                .where(t.jobs.c.id == job_id)
                .values(state=JobState.RUNNING, started=utc_now())
            )
        return self.get_job(job_id)

    def count_jobs_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(JobState, 0)
        rows = self._read(sa.select(t.jobs.c.state, sa.func.count()).group_by(t.jobs.c.state))
        for row in rows:
            counts[JobState(row["state"])] = row["count"]
        return {str(state): count for state, count in counts.items()}

    # ------------------------------------------------------------------ start-up
    def fail_running_jobs(self, error: str) -> list[str]:
        """Mark every job left running as failed with ``error``; their ids."""
        with self._write() as db:
            running = t.jobs.c.state == JobState.RUNNING
            ids = list(db.execute(sa.select(t.jobs.c.id).where(running)).scalars())
            db.execute(
                t.jobs.update()
                .where(running)
                .values(state=JobState.FAILED, error=error, finished=utc_now())
            )
        return ids

    def known_files(self) -> tuple[set[str], set[str]]:
        """(the artifact files the versions name, relative to the root; the job ids)."""
        with self.engine.connect() as connection:
            files = set(connection.execute(sa.select(t.versions.c.file)).scalars())
            jobs = set(connection.execute(sa.select(t.jobs.c.id)).scalars())
            connection.rollback()
        return files, jobs

    def adopt_version(
        self, name: str, artifact: Path, detector: Detector, wanted: int | None, note: str
    ) -> VersionRecord:
        """Register ``detector``, whose file is already at ``artifact`` under ``models/``
        (its registry row was lost), as version ``wanted`` of ``name`` if that is free,
        else the next one; the file is renamed to its version's name."""
        metadata = detector.metadata
        with self._write() as db:
            self._ensure_model(db, name)
            taken = (
                wanted is None
                or db.execute(
                    sa.select(t.versions.c.version).where(_version_is(name, wanted))
                ).first()
            )
            version = _next_version(db, name) if taken else wanted
            file = f"models/{name}/v{version:04d}.lvad"
            db.execute(
                t.versions.insert().values(
                    name=name, version=version, file=file,
                    created=str(metadata.get("created") or utc_now()),
                    job_id=metadata.get("job_id"),
                    source=str(metadata.get("source") or f"recovered:{artifact.name}"),
                    validation_loss=own_validation_loss(detector),
                    feature_names=detector.feature_names, window=detector.window,
                    threshold=float(detector.threshold.value), note=note,
                )
            )  # fmt: skip
            target = self.root / file
            if artifact != target:
                target.parent.mkdir(exist_ok=True)
                self._move_into(artifact, target)
        return self.get_version(name, version)


def _next_version(db: sa.Connection, name: str) -> int:
    latest = db.execute(
        sa.select(sa.func.max(t.versions.c.version)).where(t.versions.c.name == name)
    ).scalar()
    return (latest or 0) + 1


def _version_is(name: str, version: int) -> sa.ColumnElement[bool]:
    return (t.versions.c.name == name) & (t.versions.c.version == version)


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
