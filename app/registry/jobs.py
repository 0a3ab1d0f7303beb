"""Training jobs, each in its own "spawn" child process, at most N at a time.

A dispatcher thread waits on a condition (no polling) and starts queued jobs
while fewer than ``settings.max_concurrent_jobs`` run. Each running job has a
supervisor thread that reads the child's messages (see :mod:`app.registry.training`) from
a pipe, appends every epoch's report to the registry as it comes,
and, when the child ends, registers the model (success) or records why not.
A job never stays "running" after its child has ended.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.errors import ConflictError, NotFoundError, TooManyJobs
from app.registry.paths import PathRedactor
from app.registry.records import CANCELLED, INTERRUPTED, JobRecord, JobState, VersionRecord, utc_now
from app.registry.registry import Registry
from app.registry.training import ChildProcess, WorkerRequest, validate_params
from app.settings import Settings
from model.errors import LvadError

log = logging.getLogger(__name__)


def check_room(registry: Registry, max_queued: int) -> None:
    """TooManyJobs if ``max_queued`` jobs are queued already (LVAD_MAX_QUEUED_JOBS)."""
    queued = registry.count_jobs_by_state()["queued"]
    if queued >= max_queued:
        raise TooManyJobs(
            f"{queued} jobs are queued already, the most there may be "
            "(LVAD_MAX_QUEUED_JOBS): retry when one has started"
        )


def decide_promotion(policy: str, outcome: dict[str, Any], had_active: bool) -> tuple[bool, str]:
    """(activate the new version?, why) under ``policy``, from the child's outcome.

    ``if_better`` compares losses per time step (loss / window), so models with
    different windows compare fairly; with equal windows it is the plain loss.
    """
    if policy == "always":
        return True, "promotion policy 'always'"
    if policy == "manual":
        return False, "promotion policy 'manual': activate this version explicitly"
    if not had_active:
        return True, "there was no active model"
    if outcome.get("active_loss") is None:
        return False, outcome.get("reason") or "could not be compared with the active model"
    new = outcome["new_loss"] / outcome["window"]
    old = outcome["active_loss"] / outcome["active_window"]
    verdict = "is not worse than" if new <= old else "is worse than"
    note = (
        f"validation loss {new:.4g} {verdict} the active model's {old:.4g} "
        "(nats per time step on the job's validation data)"
    )
    return new <= old, note


@dataclass(eq=False)
class _Running:
    """A job this runner started, and what has been asked of it."""

    job: JobRecord
    child: ChildProcess
    had_active: bool  # an active model was given to compare with
    concluded: threading.Event = field(default_factory=threading.Event)  # final state written
    done: threading.Event = field(default_factory=threading.Event)  # and the process is gone
    cancel_requested: bool = False
    interrupted: bool = False  # the runner is stopping
    finalizing: bool = False  # the outcome is being recorded: too late to cancel


class JobRunner:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        on_model: Callable[[VersionRecord, bool], None],
        on_job_update: Callable[[JobRecord], None] | None = None,
        *,
        child_torch_threads: int = 1,
        cancel_grace: float = 5.0,
    ) -> None:
        """``on_model(record, activate)`` runs in a runner thread after a job registered a
        version; the service loads it and, if ``activate``, swaps it in and records it as
        the name's active version. A new version is compared with its name's active one."""
        self.registry = registry
        self.settings = settings
        self.redact = PathRedactor(registry.root, settings.data_dir)  # for job errors
        self.on_model = on_model
        self.on_job_update = on_job_update
        self.child_torch_threads = child_torch_threads
        self.cancel_grace = cancel_grace
        self._context = multiprocessing.get_context("spawn")
        self._wakeup = threading.Condition(threading.Lock())
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the dispatcher thread; jobs queued before the start run first."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._dispatch, name="lvad-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop running jobs (they fail as interrupted) and the dispatcher; queued jobs stay."""
        with self._wakeup:
            self._stopping = True
            runs = list(self._running.values())
            for run in runs:
                run.interrupted = not run.finalizing
                run.child.cancel.set()
            self._wakeup.notify_all()
        for run in runs:
            self._await(run, timeout / 4)
            run.done.wait(timeout / 4)
        if self._thread is not None:
            self._thread.join(timeout)

    def sweep(self) -> None:
        """Nothing to settle: a job's supervisor thread ends it when its child ends, and a
        job left running by a stopped service fails at the next start (recovery)."""

    def check_room(self) -> None:
        """TooManyJobs if the queue is full (LVAD_MAX_QUEUED_JOBS); ``submit`` checks it
        again, atomically, so this is only to refuse before an upload is written."""
        check_room(self.registry, self.settings.max_queued_jobs)

    def submit(
        self,
        *,
        model: str,
        source: str,
        data_path: Path,
        params: dict,
        job_id: str | None = None,
    ) -> JobRecord:
        """Queue a job training a version of ``model``; the parameters are checked first
        (DataError names the key), then the queue's room (TooManyJobs)."""
        validate_params(params)
        job = self.registry.create_job(
            model=model, source=source, data_path=data_path, params=params, job_id=job_id,
            max_queued=self.settings.max_queued_jobs,
        )  # fmt: skip
        with self._wakeup:
            self._wakeup.notify_all()
        self._notify(job)
        return job

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or stop a running one (terminated if it does not
        stop within ``cancel_grace`` seconds). ConflictError if it already finished."""
        job = self.registry.get_job(job_id)  # NotFoundError for an unknown id
        if job.is_finished:
            raise ConflictError(f"job {job_id} already {job.state}", field="id")
        with self._wakeup:
            run = self._running.get(job_id)
            if run is None:
                job = self.registry.get_job(job_id)
                if job.state != JobState.QUEUED:
                    raise ConflictError(f"job {job_id} already {job.state}")
                job = self.registry.update_job(
                    job_id, state=JobState.CANCELLED, finished=utc_now(), error=CANCELLED
                )
                self._wakeup.notify_all()
            elif not run.finalizing:
                run.cancel_requested = True
                run.child.cancel.set()
        if run is None:
            self._notify(job)
            return job
        self._await(run, self.cancel_grace)
        job = self.registry.get_job(job_id)
        if job.state != JobState.CANCELLED:
            raise ConflictError(f"job {job_id} already {job.state}")
        return job

    # ------------------------------------------------------------------ dispatching
    def _dispatch(self) -> None:
        with self._wakeup:
            while not self._stopping:
                try:
                    launched = self._launch_next()
                except Exception:  # e.g. the database is unreadable: retry on the next event
                    log.exception("could not start the next job")
                    launched = False
                if not launched:
                    self._wakeup.wait()

    def _launch_next(self) -> bool:
        """Start the oldest queued job if a slot is free (lock held); False: nothing to do."""
        if len(self._running) >= self.settings.max_concurrent_jobs:
            return False
        job = self.registry.claim_next_job()
        if job is None:
            return False
        try:
            run = self._spawn(job)
        except Exception as exc:
            log.exception("could not start job %s", job.id)
            error = self.redact(f"could not start the training process: {exc}")
            failed = self.registry.update_job(
                job.id, state=JobState.FAILED, finished=utc_now(), error=error
            )
            threading.Thread(target=self._notify, args=(failed,), daemon=True).start()
            self._wakeup.notify_all()
            return True
        self._running[job.id] = run
        name = f"lvad-job-{job.id[:8]}"
        threading.Thread(target=self._supervise, args=(run,), name=name, daemon=True).start()
        return True

    def _spawn(self, job: JobRecord) -> _Running:
        active = self._active_path(job.model)
        request = WorkerRequest(
            job.id, job.data_path, job.params, str(self.registry.tmp_dir / f"job-{job.id}.lvad"),
            None if active is None else str(active), self.child_torch_threads,
            self.settings.max_variables, job.source, job.model,
        )  # fmt: skip
        return _Running(job, ChildProcess.spawn(self._context, request), active is not None)

    def _active_path(self, name: str) -> Path | None:
        """The artifact of the version a new one of ``name`` is compared with, if any."""
        try:
            active = self.registry.get_model(name).active
        except NotFoundError:  # the job's model does not exist yet
            return None
        return None if active is None else active.path

    # ------------------------------------------------------------------ supervising
    def _supervise(self, run: _Running) -> None:
        try:
            self._notify(run.job)
            final = self._follow(run)
            if final is None:  # died without a word: its exit code tells why
                run.child.reap(self.cancel_grace)
            self._conclude(run, final)  # the child is done writing: no need to await its exit
        except Exception as exc:
            log.exception("supervising job %s failed", run.job.id)
            self._fail(run, f"internal error while supervising the job: {exc}")
        finally:
            run.concluded.set()
            with self._wakeup:
                self._wakeup.notify_all()
            run.child.reap(self.cancel_grace)  # interpreter shutdown can take seconds
            with self._wakeup:
                self._running.pop(run.job.id, None)
                self._wakeup.notify_all()
            run.done.set()

    def _follow(self, run: _Running) -> tuple | None:
        """Record every epoch as it arrives (appended: the writes per epoch do not grow
        with the history); the child's last message, None if it died. The update each
        epoch notifies carries that epoch alone as its history."""
        for message in run.child.messages():
            if message[0] != "epoch":
                return message
            report = message[1]
            progress = min(1.0, report["epoch"] / max(1, report["epochs"]))
            self.registry.add_epoch(run.job.id, report, progress)
            update = replace(run.job, state=JobState.RUNNING, progress=progress, history=[report])
            self._notify(update)
        return None

    def _conclude(self, run: _Running, final: tuple | None) -> None:
        with self._wakeup:
            run.finalizing = True
            interrupted, cancelled = run.interrupted, run.cancel_requested
        if interrupted:
            self._fail(run, INTERRUPTED)
        elif cancelled:
            self._finish(run, state=JobState.CANCELLED, error=CANCELLED)
        elif final is None:
            self._fail(run, f"training process exited with code {run.child.process.exitcode}")
        elif final[0] == "done":
            self._complete(run, final[1])
        else:  # "error", or a "cancelled" nobody asked for
            self._fail(run, str(final[1]))

    def _complete(self, run: _Running, outcome: dict[str, Any]) -> None:
        """Register the new version, apply the promotion policy, hand it to the service."""
        try:
            record = self.registry.register_version(
                run.job.model, Path(outcome["artifact"]), source=run.job.source, job_id=run.job.id
            )
        except LvadError as exc:
            self._fail(run, f"could not register the trained model: {exc.message}")
            return
        activate, note = decide_promotion(self.settings.promotion, outcome, run.had_active)
        if not activate:
            self.registry.set_version_note(record.name, record.version, note)
            record = self.registry.get_version(record.name, record.version)
        try:
            self.on_model(record, activate)
        except Exception as exc:
            log.exception("handing over model version %s failed", record.version)
            if activate:
                activate, note = False, f"the new version could not be activated: {exc}"
                self.registry.set_version_note(record.name, record.version, note)
        self._finish(
            run, state=JobState.SUCCEEDED, progress=1.0, model_version=record.version,
            promoted=activate, promotion_note=note,
        )  # fmt: skip

    def _fail(self, run: _Running, error: str) -> None:
        self._finish(run, state=JobState.FAILED, error=self.redact(error))

    def _finish(self, run: _Running, **fields: Any) -> None:
        run.child.discard_artifact()  # unless registered (moved) already: nothing half-done stays
        self._notify(self.registry.update_job(run.job.id, finished=utc_now(), **fields))

    def _await(self, run: _Running, grace: float) -> None:
        """Wait for a job asked to stop; terminate, then kill its process if it does not."""
        if run.concluded.wait(grace):
            return
        run.child.process.terminate()
        if run.concluded.wait(grace):
            return
        run.child.process.kill()
        run.concluded.wait(grace)

    def _notify(self, job: JobRecord) -> None:
        if self.on_job_update is None:
            return
        try:
            self.on_job_update(job)
        except Exception:
            log.exception("on_job_update failed for job %s", job.id)


__all__ = ["JobRunner", "check_room", "decide_promotion", "validate_params"]
