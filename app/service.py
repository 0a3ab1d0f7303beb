"""The service: one object that owns the store, the active model, scoring and jobs.

Routes stay thin and hand their work here; blocking work (model calls, loads,
file parsing) runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.batching import MicroBatcher
from app.errors import ConflictError, ForbiddenError, LimitError, full_disk_is_507
from app.inspection import FileChecker
from app.jobs import JobRunner, validate_params
from app.metrics import ServiceMetrics
from app.paths import PathRedactor
from app.recovery import recover
from app.schemas import SampleRequest, ScoreRequest
from app.scoring_process import ScoringProcess, block_prefix, remove_stale_blocks
from app.serving import ModelHolder, Scorer, ServedModel
from app.settings import Settings
from app.store import FINISHED_STATES, JobRecord, ModelRecord, Store
from model.artifact import fsync_directory
from model.detector import Detector
from model.errors import ArtifactError, DataError, shorten

log = logging.getLogger("lvad")
UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def settle_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    The collector runs after every few hundred new lists or dicts, and its full passes
    walk every tracked object: ~300k after start-up (torch, FastAPI, the model). A
    512-window request allocates ~17k lists while it is parsed and answered, so those
    passes took ~24 of its ~50 ms of server work; frozen, 2 ms (docs/benchmarks.md).

    Called after each model swap, the first at start-up. The unfreeze and full collection
    first free a replaced model's reference cycles; that pass holds the interpreter
    lock for ~0.1-0.15 s, a pause of every thread once per swap. Cyclic garbage made
    from objects frozen here (alive at the call, freed later) waits for the next call.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Service:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = Store(settings.store)  # StoreInUse if another process has it
        self.redact = PathRedactor(settings.store, settings.data_dir)
        self.checker = FileChecker(settings.max_variables, settings.max_training_values)
        self.block_prefix = block_prefix(self.store.root)
        self.holder = ModelHolder()
        self.scoring = (
            ScoringProcess(
                settings.torch_threads,
                on_restart=metrics.scoring_restarts.inc,
                prefix=self.block_prefix,
            )
            if settings.scoring_process
            else None
        )
        self.scorer = Scorer(self.holder, metrics, settings, self.scoring)
        self.batcher: MicroBatcher | None = None
        self.activation = threading.Lock()  # loads may overlap; swap + record happen together
        self.runner = JobRunner(
            self.store,
            settings,
            on_model=self.on_model,
            on_job_update=self.on_job_update,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        recover(self.store)  # logs what it found
        if stale := remove_stale_blocks(self.block_prefix):
            log.warning("removed %d shared-memory block(s) a killed server left", stale)
        self.expire_job_data()
        self.refresh_job_metrics()
        if self.scoring is not None:
            await run_in_threadpool(self.scoring.start)
        await run_in_threadpool(self.load_active)
        if self.settings.micro_batching:
            self.batcher = MicroBatcher(
                self.scorer.run_windows,
                self.settings.max_batch_windows,
                self.settings.batch_wait_ms / 1000,
                max_queued=self.settings.batch_queue_windows,
                queue_timeout_s=self.settings.batch_queue_timeout_s,
            )
            self.batcher.start()
        self.runner.start()
        if self.holder.current is None:
            self.bootstrap()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        await run_in_threadpool(self.runner.stop)
        if self.scoring is not None:
            await run_in_threadpool(self.scoring.close)
        await run_in_threadpool(self.checker.close)
        self.store.close()

    def load_active(self) -> None:
        """Serve the active version; if its file is unusable, the newest version that loads."""
        active = self.store.active_version()
        candidates = [m.version for m in self.store.list_models()]
        if active is not None:
            candidates = [active] + [v for v in candidates if v != active]
        for version in candidates:
            try:
                self.activate(version)
                if version != active:
                    log.warning("serving model version %d instead of %s", version, active)
                return
            except ArtifactError:
                continue  # logged and counted by activate

    def bootstrap(self) -> None:
        """Empty store: train a default model on the built-in demo data, as a job."""
        if not self.settings.bootstrap_demo or self.store.list_models():
            return
        if any(job.state in ("queued", "running") for job in self.store.list_jobs()):
            return
        from model.demo import make_demo

        job_id = uuid.uuid4().hex
        path = self.store.job_dir(job_id) / "demo-train.csv"
        make_demo().train.to_csv(path, index=False)
        job = self.runner.submit(
            source="bootstrap:demo",
            data_path=path,
            params=dict(self.settings.bootstrap_params),
            job_id=job_id,
        )
        log.info(
            "no model in %s: training a default model on the demo data (job %s)",
            self.settings.store,
            job.id,
        )

    # ------------------------------------------------------------------ models
    def activate(self, version: int) -> ModelRecord:
        """Load version ``version`` fully, swap it in, record it as active and freeze the
        heap again (``settle_heap``)."""
        record = self.store.get_model(version)
        started = time.perf_counter()
        try:
            detector = Detector.load(record.path)
        except ArtifactError as exc:  # the model being served stays
            self.metrics.model_load_failures.inc()
            log.error("model version %d cannot be loaded: %s", version, exc.message)
            raise ArtifactError(self.redact(exc.message), field=exc.field) from exc
        seconds = time.perf_counter() - started
        with self.activation:
            self.holder.swap(ServedModel(version, detector, record.path))
            record = self.store.set_active(version)
            settle_heap()  # under the lock: two swaps never interleave their passes
        self.metrics.set_model(version, detector.threshold.value, seconds, detector.feature_names)
        log.info("serving model version %d (loaded in %.3f s)", version, seconds)
        return record

    def on_model(self, record: ModelRecord, activate: bool) -> None:
        """A job registered ``record``; a failure to activate is recorded on the job."""
        if activate:
            self.activate(record.version)

    def on_job_update(self, job: JobRecord) -> None:
        if job.state == "running" and job.history:
            last = job.history[-1]
            log.info(
                "job %s epoch %d/%d: train loss %.3f, validation loss %.3f",
                job.id,
                last["epoch"],
                last["epochs"],
                last["train_loss"],
                last["val_loss"],
            )
        elif job.state != "running":
            log.info("job %s %s%s", job.id, job.state, f": {job.error}" if job.error else "")
        if job.history:
            self.metrics.training_loss.set(job.history[-1]["train_loss"])
            self.metrics.validation_loss.set(job.history[-1]["val_loss"])
        if job.state in FINISHED_STATES and job.started and job.finished:
            took = datetime.fromisoformat(job.finished) - datetime.fromisoformat(job.started)
            self.metrics.training.observe(took.total_seconds())
        if job.state in FINISHED_STATES:
            self.expire_job_data()
        self.refresh_job_metrics()

    def expire_job_data(self) -> None:
        """Remove the uploaded data of jobs that finished over LVAD_JOB_RETENTION_HOURS ago
        (at start-up, and whenever a job is created or finishes: the data only grows then)."""
        age = timedelta(hours=self.settings.job_retention_hours)
        cutoff = (datetime.now(UTC) - age).isoformat(timespec="milliseconds")
        for job_id in self.store.finished_jobs_before(cutoff):
            folder = self.store.root / "jobs" / job_id
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                log.info("job %s: its data is older than the retention, removed", job_id)

    def refresh_job_metrics(self) -> None:
        self.metrics.set_jobs(self.store.count_jobs_by_state())

    def model_detail(self, version: int) -> dict:
        record = self.store.get_model(version)
        served = self.holder.current
        if served is not None and served.version == version:
            header = served.detector.header()
        else:
            try:
                header = Detector.load(record.path, engine="torch").header()  # no export
            except ArtifactError as exc:
                raise ArtifactError(self.redact(exc.message), field=exc.field) from exc
        metadata = {k: v for k, v in header["metadata"].items()}
        return {
            **model_public(record),
            "config": header["config"],
            "threshold_detail": header["threshold"],
            "metadata": metadata,
        }

    # ------------------------------------------------------------------ scoring
    async def score(self, request: ScoreRequest) -> dict:
        scorer = self.scorer
        if request.series is not None:
            return await run_in_threadpool(scorer.series_body, request)
        served = self.holder.require()
        windows = scorer.check_windows(request, served.detector)
        if self.batcher is not None and windows.shape[:2] == (1, served.detector.window):
            result = await self.batcher.submit(windows[0])
            return scorer.batch_body(request, result.served, result.scored.pick(np.newaxis))
        return await run_in_threadpool(scorer.windows_body, request, windows)

    def sample_prior(self, n: int, seed: int, noise: bool) -> tuple[ServedModel, np.ndarray]:
        self.check_samples(n)
        served = self.holder.require()
        return served, served.detector.sample(n, seed=seed, noise=noise)

    def sample_posterior(self, request: SampleRequest) -> tuple[ServedModel, np.ndarray]:
        self.check_samples(request.n)
        served = self.holder.require()
        detector = served.detector
        widths = {len(row) for row in request.window}
        if len(widths) != 1:
            raise DataError(f"window rows are ragged: widths {sorted(widths)}", field="window")
        if len(request.window) < detector.window:
            raise DataError(
                f"the window has {len(request.window)} steps; the model needs {detector.window}",
                field="window",
            )
        array = Scorer.order_columns(
            np.asarray(request.window, dtype=np.float64), request.variables, detector
        )
        samples = detector.sample_posterior(
            array[-detector.window :], request.n, seed=request.seed, noise=request.noise
        )
        return served, samples

    def check_samples(self, n: int) -> None:
        if n > self.settings.max_samples:
            raise LimitError(f"n={n}; the limit is {self.settings.max_samples}", field="n")

    # ------------------------------------------------------------------ jobs
    def create_job_from_upload(
        self, filename: str, source_file: BinaryIO, params: dict
    ) -> JobRecord:
        suffix = Path(filename or "").suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise DataError(
                f"upload {shorten(repr(filename))}: expected one of {', '.join(UPLOAD_SUFFIXES)}",
                field="file",
            )
        validate_params(params)  # the cheap checks before a byte is written
        self.runner.check_room()
        self.expire_job_data()
        job_id = uuid.uuid4().hex
        folder = self.store.job_dir(job_id)
        path = folder / f"data{suffix}"
        name = shorten(Path(filename).name, 100)
        try:
            with full_disk_is_507(f"upload {name!r}"):
                save_durably(source_file, path)
            self.checker.check(path, f"upload {name!r}")
            return self.runner.submit(
                source=f"upload:{name}", data_path=path, params=params, job_id=job_id
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def create_job_from_path(self, relative: str, params: dict) -> JobRecord:
        root = self.settings.data_dir
        if root is None:
            raise ForbiddenError(
                "no data directory is configured (LVAD_DATA_DIR); upload a file", field="path"
            )
        base = Path(root).resolve()
        shown = relative if len(relative) <= 120 else relative[:117] + "..."
        try:  # a NUL byte (ValueError), a symlink loop (RuntimeError) or an overlong name (OSError)
            path = (base / relative).resolve()
            inside = path.is_relative_to(base)
            found = inside and path.is_file()
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(f"path {shown!r} is not a usable file name", field="path") from exc
        if not inside:
            raise ForbiddenError(f"path {shown!r} is outside the data directory", field="path")
        if not found:
            raise DataError(f"no file {shown!r} in the data directory", field="path")
        validate_params(params)
        self.runner.check_room()
        self.checker.check(path, f"path {shown!r}")  # a bad file is refused at once
        return self.runner.submit(source=f"path:{relative}", data_path=path, params=params)

    def cancel_job(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job.state not in ("queued", "running"):
            raise ConflictError(f"job {job_id} already {job.state}", field="id")
        return self.runner.cancel(job_id)


def save_durably(source: BinaryIO, path: Path) -> None:
    """Copy ``source`` to the new file ``path``, on the disk before this returns."""
    with path.open("wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    fsync_directory(path.parent)
    fsync_directory(path.parent.parent)


def model_public(record: ModelRecord) -> dict:
    return {
        "version": record.version,
        "created": record.created,
        "source": record.source,
        "job_id": record.job_id,
        "active": record.active,
        "validation_loss": record.validation_loss,
        "feature_names": record.feature_names,
        "window": record.window,
        "threshold": record.threshold,
        "note": record.note,
    }
