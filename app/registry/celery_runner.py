"""Training jobs on Celery workers (scale-out): the replica's side.

The same interface as the local ``JobRunner`` (``app/registry/runners.py``): ``submit``
stores the job's data as rows of the shared registry, creates the queued job and
publishes its message; ``cancel`` ends the job's row at once (its worker stops at its
next heartbeat or batch). ``sweep``, every few seconds in every replica, applies the
heartbeat rule (``app/registry/claims.py``): a running job with no heartbeat for
``LVAD_JOB_HEARTBEAT_TIMEOUT_S`` is queued again and published, or failed after
``LVAD_JOB_MAX_ATTEMPTS``. Workers register versions and activate them in the
registry; the replicas pick activations up from there (``LoadedModels.refresh``).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from app.errors import full_disk_is_507
from app.registry import claims
from app.registry.broker import BrokerUnavailable, make_celery, publish
from app.registry.jobs import check_room
from app.registry.records import JobRecord, JobState, utc_now
from app.registry.registry import Registry
from app.registry.training import validate_params
from app.settings import Settings

log = logging.getLogger("lvad")


class CeleryRunner:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        on_job_update: Callable[[JobRecord], None] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.on_job_update = on_job_update
        self.celery = make_celery(settings)

    def start(self) -> None:
        """Nothing runs here: workers run the jobs, and the sweep is scheduled by the
        service (``Components``)."""

    def stop(self) -> None:
        self.celery.close()

    def check_room(self) -> None:
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
        """Store the data, queue the job, publish it (BrokerUnavailable: the job fails
        with that reason and the client is told to retry)."""
        validate_params(params)
        job_id = job_id or uuid.uuid4().hex
        key = f"jobs/{job_id}/{Path(data_path).name}"
        files = self.registry.files
        try:
            with full_disk_is_507("the job's data"), self.registry.engine.begin() as db:
                files.store(db, key, Path(data_path))
            job = self.registry.create_job(
                model=model, source=source, data_path=Path(key), params=params, job_id=job_id,
                max_queued=self.settings.max_queued_jobs,
            )  # fmt: skip
        except BaseException:
            files.forget(f"jobs/{job_id}/")
            raise
        upload = self.registry.root / "jobs" / job_id
        if Path(data_path).parent == upload:  # stored: this replica's copy is not needed
            shutil.rmtree(upload, ignore_errors=True)
        self._publish_or_fail(job.id)
        self._notify(job)
        return job

    def _publish_or_fail(self, job_id: str) -> None:
        try:
            publish(self.celery, job_id)
        except BrokerUnavailable as exc:
            self.registry.update_job(
                job_id, state=JobState.FAILED, finished=utc_now(), error=exc.message
            )
            raise

    def cancel(self, job_id: str) -> JobRecord:
        job = claims.cancel(self.registry, job_id)
        self._notify(job)
        return job

    def sweep(self) -> None:
        """Queue again (and publish) or fail the jobs whose worker was lost."""
        settings = self.settings
        requeued, failed = claims.sweep_lost(
            self.registry, settings.job_heartbeat_timeout_s, settings.job_max_attempts
        )
        for job_id in failed:
            log.warning("job %s: its worker was lost on its last attempt: failed", job_id)
        for job_id in requeued:
            log.warning("job %s: its worker was lost: queued again", job_id)
            try:
                self._publish_or_fail(job_id)
            except BrokerUnavailable:
                log.error("job %s could not be queued again: the broker is unreachable", job_id)

    def _notify(self, job: JobRecord) -> None:
        if self.on_job_update is not None:
            try:
                self.on_job_update(job)
            except Exception:
                log.exception("on_job_update failed for job %s", job.id)
