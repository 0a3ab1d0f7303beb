"""``lvad worker``: a Celery worker that runs training jobs (scale-out).

Each job runs in a pool process of its own (prefork, one job per process), which
claims the job's row, fetches its data and the active model from the registry,
trains as a job of the embedded store does (``app/registry/training.py``), writes a
heartbeat every ``LVAD_JOB_HEARTBEAT_TIMEOUT_S / 6`` seconds and each epoch, and
finally registers the version, applies the promotion policy (``LVAD_PROMOTION``) and
ends the job in one transaction. Every write is conditional on the row still being
this attempt's (``app/registry/claims.py``): a job cancelled or declared lost
meanwhile stops at its next batch and keeps nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from app.errors import NotFoundError
from app.registry import claims
from app.registry import tables as t
from app.registry.broker import QUEUE, TASK, make_celery
from app.registry.jobs import decide_promotion
from app.registry.records import JobRecord, JobState
from app.registry.registry import Registry
from app.registry.training import WorkerRequest, train_and_compare
from app.settings import Settings
from model.errors import LvadError, TrainingCancelled

log = logging.getLogger("lvad")


def every(seconds: float, work: Callable[[], None]) -> BackgroundScheduler:
    """A started scheduler running ``work`` every ``seconds`` (never two at once)."""
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC
    )
    scheduler.add_job(work, "interval", seconds=seconds)
    scheduler.start()
    return scheduler


class JobLost(Exception):
    """The job's row is no longer this attempt's: nothing of it is kept."""


class Attempt:
    """One attempt at one job, in this process; see the module docstring."""

    def __init__(self, registry: Registry, settings: Settings, job: JobRecord, attempt: int):
        self.registry, self.settings, self.job, self.number = registry, settings, job, attempt
        self.stop = threading.Event()  # cancelled or lost: stop at the next batch
        self.deadline = time.monotonic() + settings.job_time_limit_hours * 3600
        self.artifact = registry.tmp_dir / f"job-{job.id}-{attempt}.lvad"

    def run(self) -> None:
        heartbeat = every(self.settings.job_heartbeat_timeout_s / 6, self._beat)
        try:
            self._train()
        finally:
            self.stop.set()
            heartbeat.shutdown(wait=True)
            self.artifact.unlink(missing_ok=True)
            shutil.rmtree(self.registry.root / "jobs" / self.job.id, ignore_errors=True)

    def _beat(self) -> None:
        """The heartbeat; a row that is no longer this attempt's stops the training."""
        try:
            if not claims.beat(self.registry, self.job.id, self.number) and not self.stop.is_set():
                log.warning("job %s: cancelled or taken over: stopping", self.job.id)
                self.stop.set()
        except Exception as exc:  # the database is away: try again at the next beat
            log.warning("job %s: heartbeat not written: %s", self.job.id, exc)

    def _should_stop(self) -> bool:
        return self.stop.is_set() or time.monotonic() > self.deadline

    def _on_epoch(self, report: Any) -> None:
        if not claims.add_epoch(self.registry, self.job.id, self.number, report.to_dict()):
            self.stop.set()

    def _train(self) -> None:
        job, settings = self.job, self.settings
        try:
            data = self.registry.files.local(job.data_path)
            active = self._active_model()
            request = WorkerRequest(
                job.id, str(data), job.params, str(self.artifact),
                None if active is None else str(active), settings.torch_threads or 1,
                settings.max_variables, job.source, job.model,
            )  # fmt: skip
            outcome = train_and_compare(request, self._should_stop, self._on_epoch)
        except TrainingCancelled:
            if not self.stop.is_set():  # the time limit, not a cancel
                hours = settings.job_time_limit_hours
                self._fail(f"stopped at the time limit of {hours:g} h (LVAD_JOB_TIME_LIMIT_HOURS)")
            return
        except LvadError as exc:
            self._fail(exc.message)
            return
        except Exception as exc:  # anything else still reaches the job's record
            log.exception("job %s failed", job.id)
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._complete(outcome, had_active=active is not None)

    def _active_model(self) -> Path | None:
        try:
            active = self.registry.get_model(self.job.model).active
        except NotFoundError:
            return None
        return None if active is None else self.registry.local_file(active)

    def _complete(self, outcome: dict[str, Any], had_active: bool) -> None:
        self.stop.set()  # trained: the heartbeat has nothing more to guard
        activate, note = decide_promotion(self.settings.promotion, outcome, had_active)
        job, attempt = self.job, self.number

        def conclude(db: sa.Connection, version: int) -> None:
            if activate:
                models = t.models
                db.execute(
                    models.update().where(models.c.name == job.model).values(active_version=version)
                )
            else:
                versions = t.versions
                db.execute(
                    versions.update()
                    .where((versions.c.name == job.model) & (versions.c.version == version))
                    .values(note=note)
                )
            if not claims.finish(
                db, job.id, attempt, state=JobState.SUCCEEDED, progress=1.0,
                model_version=version, promoted=activate, promotion_note=note,
            ):  # fmt: skip
                raise JobLost(job.id)

        try:
            record = self.registry.register_version(
                job.model, Path(outcome["artifact"]), source=job.source, job_id=job.id,
                within=conclude,
            )  # fmt: skip
        except JobLost:
            log.warning("job %s: cancelled or taken over before it ended: kept nothing", job.id)
            return
        except LvadError as exc:
            self._fail(f"could not register the trained model: {exc.message}")
            return
        log.info(
            "job %s: model %r version %d registered (%s)",
            job.id, record.name, record.version, "activated" if activate else note,
        )  # fmt: skip

    def _fail(self, error: str) -> None:
        self.stop.set()
        with self.registry.engine.begin() as db:
            claims.finish(db, self.job.id, self.number, state=JobState.FAILED, error=error)
        log.warning("job %s failed: %s", self.job.id, error)


class Executor:
    """The task's body in each pool process; the registry is opened there, after the fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry: Registry | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def open(self, **_: Any) -> None:  # Celery's worker_process_init
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.registry = Registry.open(self.settings)

    def run(self, job_id: str) -> str:
        if self.registry is None:
            self.open()
        attempt = claims.claim(self.registry, job_id, self.name)
        if attempt is None:
            log.info("job %s is not queued (any more): message acknowledged, ignored", job_id)
            return "ignored"
        job = self.registry.get_job(job_id)
        log.info("job %s (model %r): attempt %d on %s", job_id, job.model, attempt, self.name)
        Attempt(self.registry, self.settings, job, attempt).run()
        return "done"


def ready_file(settings: Settings) -> Path:
    """Present while this worker consumes jobs from the broker (``LVAD_STORE/worker.ready``):
    what a container's health check tests."""
    return settings.store / "worker.ready"


def run_worker(settings: Settings, concurrency: int | None = None) -> None:
    """Start a Celery worker on ``LVAD_BROKER_URL`` consuming training jobs (blocks)."""
    from celery import signals

    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per heartbeat
    registry = Registry.open(settings)  # the schema is up to date before any job runs
    registry.close()
    app = make_celery(settings)
    executor = Executor(settings)

    def train(job_id: str) -> str:
        return executor.run(job_id)

    app.task(name=TASK)(train)
    signals.worker_process_init.connect(executor.open, weak=False)
    ready = ready_file(settings)  # the container's health check: consuming jobs
    ready.unlink(missing_ok=True)
    signals.worker_ready.connect(lambda **_: ready.touch(), weak=False)
    signals.worker_shutdown.connect(lambda **_: ready.unlink(missing_ok=True), weak=False)
    app.worker_main([
        "worker", "--pool", "prefork", "--queues", QUEUE,
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--loglevel", settings.log_level.upper(), "--without-gossip", "--without-mingle",
        "--hostname", f"lvad@{socket.gethostname()}-{os.getpid()}",
    ])  # fmt: skip
