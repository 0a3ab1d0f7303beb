"""One training attempt of one detector: follow its job, or read ``fit_window`` of
history and hand it to the host's job queue.

The history of every usable group (``frames.training_data``) goes into one
training, the groups one after the other: one model learns what normal looks like
for all of them, and each group is then scored against its own history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import TooManyJobs
from app.pull.detectors_file import DetectorSpec
from app.pull.frames import to_datetime64, training_data
from app.pull.host import ModelHost
from app.pull.reader import PrometheusReader
from app.pull.scoring_round import grid_end, read_aligned
from app.registry.records import JobState
from model.errors import LvadError

log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    job_id: str | None = None  # the job this detector waits for
    failures: int = 0  # attempts in a row that could not start or failed (the backoff)


@dataclass(frozen=True)
class TrainingResult:
    """``outcome``: ``waiting`` (the job is queued or running), ``succeeded``, ``failed``
    (the job, or the host refused it), ``submitted``, ``queue_full``,
    ``too_little_data`` or ``standby`` (another replica runs the detectors)."""

    outcome: str
    points: int = 0
    message: str = ""

    @property
    def retry(self) -> bool:
        """Whether to try again soon (with backoff) rather than at the next fit_every."""
        return self.outcome in ("failed", "queue_full", "too_little_data")


def follow_job(host: ModelHost, state: TrainingState) -> TrainingResult | None:
    """The pending job's result once it finished (None: no job pending)."""
    if state.job_id is None:
        return None
    job = host.job_state(state.job_id)
    if not JobState(job).finished:
        return TrainingResult("waiting")
    finished, state.job_id = state.job_id, None
    if job == "succeeded":
        return TrainingResult("succeeded", message=f"job {finished} succeeded")
    return TrainingResult("failed", message=f"job {finished} {job}")


def training_round(
    spec: DetectorSpec,
    host: ModelHost,
    reader: PrometheusReader,
    state: TrainingState,
    now: float,
) -> TrainingResult:
    """Follow the pending job, or start one if the history suffices. PrometheusError if
    a query fails."""
    followed = follow_job(host, state)
    if followed is not None:
        return followed
    end = grid_end(now, spec.step)
    start = end - int(spec.fit_window // spec.step) * spec.step
    data = training_data(read_aligned(spec, reader, spec.variables, start, end), spec.max_missing)
    if len(data.values) < spec.min_train_points:
        message = f"{len(data.values)} of {spec.min_train_points} points in {data.groups} groups"
        return TrainingResult("too_little_data", len(data.values), message)
    try:
        state.job_id = host.train(
            spec.model,
            data.values,
            to_datetime64(data.times),
            spec.variables,
            spec.model_params,
        )
    except TooManyJobs as exc:
        return TrainingResult("queue_full", len(data.values), exc.message)
    except LvadError as exc:
        return TrainingResult("failed", len(data.values), exc.message)
    message = f"job {state.job_id} on {len(data.values)} points of {data.groups} groups"
    log.info("detector %s: training %s", spec.model, message)
    return TrainingResult("submitted", len(data.values), message)
