"""What the app runs, built once by the lifespan: the registry, the loaded models, the
scoring pipeline and its backend, sampling, and the training jobs.

Routes reach these through ``app/http/deps.py``. Blocking work (model calls, loads,
file parsing) runs in worker threads or the scoring process, never on the event loop.

The registry and the job runner are chosen once, here: the embedded store (SQLite in
``LVAD_STORE``, jobs in child processes), or, with ``LVAD_REGISTRY_URL`` and
``LVAD_BROKER_URL``, a replica of a scale-out (PostgreSQL, jobs on Celery workers),
which also runs a scheduler: the active versions refreshed every
``LVAD_REFRESH_INTERVAL_S``, and lost jobs swept (``app/registry/claims.py``). In pull
mode, one replica at a time runs a detectors file's detectors (an advisory lock named
by their models, so that replicas given different files share the work).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from starlette.concurrency import run_in_threadpool

from app.ops.metrics import ServiceMetrics
from app.pull.detectors_file import load_detectors_file
from app.pull.exporter import PullMetrics
from app.pull.runner import DetectorRunner
from app.pull.service_host import ServiceHost
from app.registry.celery_runner import CeleryRunner
from app.registry.coordination import SchedulerLock, exclusively
from app.registry.inspection import FileChecker
from app.registry.intake import JobIntake
from app.registry.jobs import JobRunner
from app.registry.paths import PathRedactor
from app.registry.records import DEFAULT_MODEL, JobRecord, JobState, VersionRecord
from app.registry.recovery import recover
from app.registry.registry import Registry
from app.registry.runners import TrainingRunner
from app.registry.streams import StreamStates
from app.scoring.backends import LOCAL_ROWS, BySize, InChild, InProcess, ScoringBackend
from app.scoring.batching import MicroBatching
from app.scoring.models import LoadedModels
from app.scoring.pipeline import ScoringPipeline
from app.scoring.process import ScoringProcess, block_prefix, remove_stale_blocks
from app.scoring.sampling import Sampler
from app.scoring.streams import StreamScoring
from app.settings import Settings

log = logging.getLogger("lvad")


def settle_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    The collector's full passes walk every tracked object, and after start-up
    those are many (torch, FastAPI, the models): frozen, they no longer slow every
    request (``bench/request_work.py`` measures it, docs/benchmarks.md). Called
    after each model swap; the unfreeze and full collection first free a replaced
    model's reference cycles, a pause of every thread once per swap. Cyclic garbage
    made from objects frozen here (alive at the call, freed later) waits for the next
    call.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Components:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = Registry.open(settings)  # StoreInUse if another process has the store
        self.redact = PathRedactor(settings.store, settings.data_dir)
        self.models = LoadedModels(
            self.registry, metrics, settings.max_loaded_models, self.redact, settle_heap
        )
        self.block_prefix = block_prefix(self.registry.root)
        self.process = (
            ScoringProcess(
                settings.torch_threads,
                on_restart=metrics.scoring_restarts.inc,
                kept_models=settings.max_loaded_models + 1,
                prefix=self.block_prefix,
            )
            if settings.scoring_process
            else None
        )
        self.backend = self._backend()
        self.streams = StreamScoring(
            self.backend, StreamStates(self.registry.engine, settings.max_streams), metrics
        )
        self.scoring = ScoringPipeline(self.models, self.backend, metrics, settings, self.streams)
        self.sampler = Sampler(self.models, settings.max_samples)
        self.runner: TrainingRunner = (
            CeleryRunner(self.registry, settings, on_job_update=self.on_job_update)
            if settings.scale_out
            else JobRunner(
                self.registry, settings, on_model=self.on_model, on_job_update=self.on_job_update
            )
        )
        self.scheduler: BackgroundScheduler | None = None
        self.checker = FileChecker(settings.max_variables, settings.max_training_values)
        self.jobs = JobIntake(self.registry, self.runner, self.checker, settings.data_dir)
        self.detectors: DetectorRunner | None = None  # pull mode, started with the service
        self.pull_lock: SchedulerLock | None = None

    def _backend(self) -> ScoringBackend:
        """The one backend every model call goes through (``app/scoring/backends.py``)."""
        s, observe = self.settings, self.metrics.observe_call
        self.local = InProcess(observe)
        self.child = None if self.process is None else InChild(self.process, observe)
        backend: ScoringBackend = self.local
        if self.child is not None:
            backend = BySize(self.local, self.child, LOCAL_ROWS)
        if s.micro_batching:
            backend = MicroBatching(
                backend,
                self.local,  # micro-batches: see app/scoring/batching.py
                s.max_batch_windows,
                s.batch_wait_ms / 1000,
                max_queued=s.batch_queue_windows,
                queue_timeout_s=s.batch_queue_timeout_s,
            )
        return backend

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        recover(self.registry)  # logs what it found
        if stale := remove_stale_blocks(self.block_prefix):
            log.warning("removed %d shared-memory block(s) a killed server left", stale)
        self.expire_job_data()
        self.refresh_job_metrics()
        if self.process is not None:
            await run_in_threadpool(self.process.start)
        await run_in_threadpool(self.models.serve_active)
        if isinstance(self.backend, MicroBatching):
            self.backend.start()
        self.runner.start()
        self.bootstrap()
        if self.settings.scale_out:
            self.scheduler = self._replica_scheduler()
            self.scheduler.start()
        if self.settings.detectors is not None:
            self.detectors = self._detector_runner(asyncio.get_running_loop())
            self.detectors.start()

    def _replica_scheduler(self) -> BackgroundScheduler:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per run
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC
        )
        interval, timeout = self.settings.refresh_interval_s, self.settings.job_heartbeat_timeout_s
        scheduler.add_job(self.refresh_models, "interval", seconds=interval)
        scheduler.add_job(self.sweep_jobs, "interval", seconds=max(1.0, timeout / 6))
        return scheduler

    def _detector_runner(self, loop: asyncio.AbstractEventLoop) -> DetectorRunner:
        """Pull mode (docs/pull.md): the detectors file's runner on this service's models."""
        assert self.settings.detectors is not None
        host = ServiceHost(
            self.registry,
            self.models,
            self.streams,
            lambda call: asyncio.run_coroutine_threadsafe(call, loop).result(),
            self.scoring.observe,
            self.jobs,
        )
        detectors = load_detectors_file(self.settings.detectors)
        # one replica runs a set of detectors; replicas given other files run theirs
        models = ",".join(sorted(spec.model for spec in detectors.detectors))
        self.pull_lock = SchedulerLock(self.registry, f"pull-detectors:{models}")
        return DetectorRunner(
            detectors, host, PullMetrics(self.metrics.registry), leads=self.pull_lock.holds
        )

    async def stop(self) -> None:
        if self.detectors is not None:
            await run_in_threadpool(self.detectors.stop)
        if self.pull_lock is not None:
            await run_in_threadpool(self.pull_lock.release)
        if self.scheduler is not None:
            await run_in_threadpool(self.scheduler.shutdown, True)
        if isinstance(self.backend, MicroBatching):
            await self.backend.stop()
        await run_in_threadpool(self.runner.stop)
        if self.process is not None:
            await run_in_threadpool(self.process.close)
        for closing in (self.local, self.child, self.checker):
            if closing is not None:
                await run_in_threadpool(closing.close)
        self.registry.close()

    @property
    def ready(self) -> bool:
        """Some model can be served (the ``default`` model, if there is one, is loaded)."""
        loaded = {served.name for served in self.models.loaded()}
        active = self.registry.active_versions()
        return bool(loaded) and (DEFAULT_MODEL in loaded or DEFAULT_MODEL not in active)

    def bootstrap(self) -> None:
        """A store without any version: train the ``default`` model on the built-in demo
        data, as a job (again at the next start if that job failed)."""
        if not self.settings.bootstrap_demo:
            return
        with exclusively(self.registry, "bootstrap"):  # replicas: one of them, once
            if any(model.versions for model in self.registry.list_models()):
                return
            if any(not job.is_finished for job in self.registry.list_jobs()):
                return
            job = self.jobs.demo(DEFAULT_MODEL, dict(self.settings.bootstrap_params))
        log.info("no model yet: training a default model on the demo data (job %s)", job.id)

    # ------------------------------------------------------------------ job events
    def on_model(self, record: VersionRecord, activate: bool) -> None:
        """A job registered ``record``; a failure to activate is recorded on the job."""
        if activate:
            self.models.activate(record.name, record.version)

    def on_job_update(self, job: JobRecord) -> None:
        model = self.metrics
        if job.state == JobState.RUNNING and job.history:
            last = job.history[-1]
            log.info(
                "job %s (model %r) epoch %d/%d: train loss %.3f, validation loss %.3f",
                job.id, job.model, last["epoch"], last["epochs"], last["train_loss"],
                last["val_loss"],
            )  # fmt: skip
        elif job.state != JobState.RUNNING:
            log.info("job %s %s%s", job.id, job.state, f": {job.error}" if job.error else "")
        if job.history:
            model.training_loss.labels(model=job.model).set(job.history[-1]["train_loss"])
            model.validation_loss.labels(model=job.model).set(job.history[-1]["val_loss"])
        if job.is_finished and job.started and job.finished:
            took = datetime.fromisoformat(job.finished) - datetime.fromisoformat(job.started)
            model.training.labels(model=job.model).observe(took.total_seconds())
        if job.is_finished or job.state == JobState.QUEUED:  # the data only grows then
            self.expire_job_data()
        self.refresh_job_metrics()

    # ------------------------------------------------------------------ replicas
    def refresh_models(self) -> None:
        """Serve what another replica or a worker activated (scheduled, scale-out)."""
        try:
            for name, version in self.models.refresh():
                log.info("model %r version %d was activated elsewhere: serving it", name, version)
        except Exception as exc:  # the database is away: the served versions stay
            self._registry_trouble("the active versions could not be read", exc)

    def sweep_jobs(self) -> None:
        """The heartbeat rule for jobs on workers, and the job metrics (scheduled)."""
        try:
            self.runner.sweep()
            self.refresh_job_metrics()
        except Exception as exc:
            self._registry_trouble("lost jobs could not be swept", exc)

    def _registry_trouble(self, what: str, exc: Exception) -> None:
        log.warning("%s: %s", what, exc)

    def expire_job_data(self) -> None:
        """Remove the uploaded data of jobs that finished over LVAD_JOB_RETENTION_HOURS ago
        (at start-up, and whenever a job is created or finishes)."""
        age = timedelta(hours=self.settings.job_retention_hours)
        cutoff = (datetime.now(UTC) - age).isoformat(timespec="milliseconds")
        stored = self.registry.files.job_ids()  # a shared registry's rows of job data
        for job_id in self.registry.finished_jobs_before(cutoff):
            folder = self.registry.root / "jobs" / job_id
            if job_id in stored:
                self.registry.files.forget(f"jobs/{job_id}/")
                log.info("job %s: its stored data is older than the retention, removed", job_id)
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                log.info("job %s: its data is older than the retention, removed", job_id)

    def refresh_job_metrics(self) -> None:
        self.metrics.set_jobs(self.registry.count_jobs_by_state())
