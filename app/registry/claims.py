"""A job's row as the one truth about it when it runs on workers (scale-out).

A broker message only says "job X may be run". Whoever acts on a job changes its row
with one conditional statement, so that two actors never both win:

* a worker **claims** a queued job (queued -> running, ``attempts`` + 1, a heartbeat);
  a message for a job that is no longer queued claims nothing, and is acknowledged and
  ignored;
* while it trains, the worker writes its **heartbeat** and each epoch only while the
  row is still running *its* attempt; when a write finds it is not (cancelled, or
  declared lost), the worker stops and keeps nothing;
* a **cancel** moves a queued or running job to cancelled at once;
* the worker **finishes** its attempt (succeeded, failed) in the transaction that
  registers the model, again only if the row is still its attempt;
* any replica **sweeps**: a running job whose heartbeat is older than the timeout is
  lost; it goes back to queued if it has had fewer than the allowed attempts (and is
  published again), else it fails with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.errors import ConflictError
from app.registry import tables as t
from app.registry.records import CANCELLED, EPOCHS_KEPT, JobRecord, JobState, utc_now
from app.registry.registry import Registry


def _attempt_is(job_id: str, attempt: int) -> sa.ColumnElement[bool]:
    jobs = t.jobs.c
    return (jobs.id == job_id) & (jobs.state == JobState.RUNNING) & (jobs.attempts == attempt)


def claim(registry: Registry, job_id: str, worker: str) -> int | None:
    """Move a queued job to running for ``worker``: its attempt number, or None when the
    job is not queued (finished, cancelled, running elsewhere, unknown)."""
    now = utc_now()
    jobs = t.jobs
    with registry.engine.begin() as db:
        attempt = db.execute(
            jobs.update()
            .where((jobs.c.id == job_id) & (jobs.c.state == JobState.QUEUED))
            .values(
                state=JobState.RUNNING,
                started=now,
                heartbeat=now,
                worker=worker,
                attempts=jobs.c.attempts + 1,
                progress=0.0,
            )  # fmt: skip
            .returning(jobs.c.attempts)
        ).scalar()
        if attempt is not None:  # a new attempt starts its history afresh
            db.execute(t.job_epochs.delete().where(t.job_epochs.c.job_id == job_id))
    return attempt


def beat(registry: Registry, job_id: str, attempt: int) -> bool:
    """Write the attempt's heartbeat; False when the row is no longer this attempt's."""
    with registry.engine.begin() as db:
        done = db.execute(
            t.jobs.update().where(_attempt_is(job_id, attempt)).values(heartbeat=utc_now())
        )
    return done.rowcount == 1


def add_epoch(registry: Registry, job_id: str, attempt: int, report: dict) -> bool:
    """Append one epoch's report and its progress, if the row is still this attempt's."""
    progress = min(1.0, report["epoch"] / max(1, report["epochs"]))
    with registry.engine.begin() as db:
        done = db.execute(
            t.jobs.update()
            .where(_attempt_is(job_id, attempt))
            .values(progress=progress, heartbeat=utc_now())
        )
        if done.rowcount != 1:
            return False
        epochs, epoch = t.job_epochs, int(report["epoch"])
        db.execute(epochs.insert().values(job_id=job_id, epoch=epoch, report=report))
        db.execute(
            epochs.delete().where(
                (epochs.c.job_id == job_id) & (epochs.c.epoch <= epoch - EPOCHS_KEPT)
            )
        )
    return True


def finish(db: sa.Connection, job_id: str, attempt: int, **fields: Any) -> bool:
    """End the attempt in the transaction ``db`` (``state`` and what goes with it)."""
    done = db.execute(
        t.jobs.update().where(_attempt_is(job_id, attempt)).values(finished=utc_now(), **fields)
    )
    return done.rowcount == 1


def cancel(registry: Registry, job_id: str) -> JobRecord:
    """Cancel a queued or running job at once (its worker stops at its next heartbeat or
    batch); ConflictError if it already finished, NotFoundError if there is none."""
    jobs = t.jobs
    with registry.engine.begin() as db:
        done = db.execute(
            jobs.update()
            .where((jobs.c.id == job_id) & jobs.c.state.in_([JobState.QUEUED, JobState.RUNNING]))
            .values(state=JobState.CANCELLED, finished=utc_now(), error=CANCELLED)
        )
    job = registry.get_job(job_id)
    if done.rowcount == 0:
        raise ConflictError(f"job {job_id} already {job.state}", field="id")
    return job


def sweep_lost(
    registry: Registry, timeout_s: float, max_attempts: int, now: datetime | None = None
) -> tuple[list[str], list[str]]:
    """Declare lost every running job whose heartbeat is older than ``timeout_s``:
    (ids queued again, ids failed). Each is one conditional update, so two replicas
    sweeping together act on a job once."""
    now = now or datetime.now(UTC)
    stale = (now - timedelta(seconds=timeout_s)).isoformat(timespec="milliseconds")
    jobs = t.jobs.c
    lost = (jobs.state == JobState.RUNNING) & (jobs.heartbeat < stale)
    with registry.engine.begin() as db:
        requeued = db.execute(
            t.jobs.update()
            .where(lost & (jobs.attempts < max_attempts))
            .values(state=JobState.QUEUED, started=None, worker=None, heartbeat=utc_now())
            .returning(jobs.id)
        ).scalars()
        requeued = list(requeued)
        error = (
            f"worker lost: no heartbeat for {timeout_s:g} s (LVAD_JOB_HEARTBEAT_TIMEOUT_S), "
            f"after {max_attempts} attempt(s) (LVAD_JOB_MAX_ATTEMPTS)"
        )
        failed = list(
            db.execute(
                t.jobs.update()
                .where(lost & (jobs.attempts >= max_attempts))
                .values(state=JobState.FAILED, finished=utc_now(), error=error)
                .returning(jobs.id)
            ).scalars()
        )
    return requeued, failed
