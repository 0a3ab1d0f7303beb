"""What the app runs, built once by the lifespan: the registry, the loaded models, the
scoring pipeline and its backend, sampling, and the training jobs.

Routes reach these through ``app/http/deps.py``. Blocking work (model calls, loads,
file parsing) runs in worker threads or the scoring process, never on the event loop.
"""

from __future__ import annotations

import gc
import logging
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from app.ops.metrics import ServiceMetrics
from app.registry.intake import JobIntake
from app.registry.jobs import JobRunner
from app.registry.records import DEFAULT_MODEL, JobRecord, JobState, VersionRecord
from app.registry.registry import Registry
from app.scoring.backends import LOCAL_ROWS, BySize, InChild, InProcess, ScoringBackend
from app.scoring.batching import MicroBatching
from app.scoring.models import LoadedModels
from app.scoring.pipeline import ScoringPipeline
from app.scoring.process import ScoringProcess
from app.scoring.sampling import Sampler
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
        self.registry = Registry(settings.store)
        self.models = LoadedModels(
            self.registry, metrics, settings.max_loaded_models, on_swap=settle_heap
        )
        self.process = (
            ScoringProcess(
                settings.torch_threads,
                on_restart=metrics.scoring_restarts.inc,
                kept_models=settings.max_loaded_models + 1,
            )
            if settings.scoring_process
            else None
        )
        self.backend = self._backend()
        self.scoring = ScoringPipeline(self.models, self.backend, metrics, settings)
        self.sampler = Sampler(self.models, settings.max_samples)
        self.runner = JobRunner(
            self.registry, settings, on_model=self.on_model, on_job_update=self.on_job_update
        )
        self.jobs = JobIntake(self.registry, self.runner, settings.data_dir, settings.max_variables)

    def _backend(self) -> ScoringBackend:
        """The one backend every model call goes through (``app/scoring/backends.py``)."""
        local = InProcess(self.metrics.observe_call)
        backend: ScoringBackend = local
        if self.process is not None:
            backend = BySize(local, InChild(self.process, self.metrics.observe_call), LOCAL_ROWS)
        if self.settings.micro_batching:
            backend = MicroBatching(
                backend, self.settings.max_batch_windows, self.settings.batch_wait_ms / 1000
            )
        return backend

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for job_id in self.registry.recover():
            log.warning("job %s was running when the service stopped: marked failed", job_id)
        self.refresh_job_metrics()
        if self.process is not None:
            await run_in_threadpool(self.process.start)
        await run_in_threadpool(self.models.serve_active)
        if isinstance(self.backend, MicroBatching):
            self.backend.start()
        self.runner.start()
        self.bootstrap()

    async def stop(self) -> None:
        if isinstance(self.backend, MicroBatching):
            await self.backend.stop()
        await run_in_threadpool(self.runner.stop)
        if self.process is not None:
            await run_in_threadpool(self.process.close)
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
        if any(model.versions for model in self.registry.list_models()):
            return
        if any(not job.is_finished for job in self.registry.list_jobs()):
            return
        job = self.jobs.demo(DEFAULT_MODEL, dict(self.settings.bootstrap_params))
        log.info(
            "no model in %s: training a default model on the demo data (job %s)",
            self.settings.store,
            job.id,
        )

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
        self.refresh_job_metrics()

    def refresh_job_metrics(self) -> None:
        self.metrics.set_jobs(self.registry.count_jobs_by_state())
