"""The one interface of training jobs that the service holds, whoever runs them.

``JobRunner`` (``app/registry/jobs.py``) runs them in child processes of the service:
the embedded store. ``CeleryRunner`` (``app/registry/celery_runner.py``) hands them to
``lvad worker`` processes through the broker: the scale-out. ``Components`` picks one
at start-up from the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from app.registry.records import JobRecord


class TrainingRunner(Protocol):
    def start(self) -> None:
        """Begin running queued jobs (the local runner), or nothing (workers run them)."""

    def stop(self) -> None:
        """Stop what this process runs; queued jobs stay queued."""

    def check_room(self) -> None:
        """TooManyJobs when the queue is full, before an upload is written."""

    def submit(
        self, *, model: str, source: str, data_path: Path, params: dict, job_id: str | None = None
    ) -> JobRecord:
        """Queue a job training a version of ``model`` on the file ``data_path``."""

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; ConflictError if it already finished."""

    def sweep(self) -> None:
        """Settle jobs whose runner was lost (the heartbeat rule on workers)."""
