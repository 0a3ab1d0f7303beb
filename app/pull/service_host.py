"""``ModelHost`` on the service's named models: what pull mode scores and trains with.

Scoring goes the way a score request for a ``stream`` goes: each group is a stream
whose adaptive threshold and drift are kept in the registry (``app/scoring/streams.py``),
scored through the backend built at start-up and counted in the same metrics; the
runner's scheduler threads hand the call to the event loop (``run``) and wait for it. Training
goes through the job intake, the queue's bound and the promotion gate, as an upload
would. The expected band comes from the served detector's decoder, in this process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from app.errors import NotFoundError
from app.pull.host import Band, StreamResult
from app.registry.intake import JobIntake
from app.registry.records import JobState
from app.registry.registry import Registry
from app.scoring.backends import SeriesOptions, Timed
from app.scoring.models import LoadedModels, ServedModel
from app.scoring.streams import StreamScoring
from model.alarm import Scored
from model.band import expected_band
from model.errors import LvadError

T = TypeVar("T")
STREAM_KEY = 200  # characters of a stream's name the registry keeps
Runner = Callable[[Coroutine[Any, Any, T]], T]  # runs a coroutine from a worker thread


class ServiceHost:
    def __init__(
        self,
        registry: Registry,
        models: LoadedModels,
        streams: StreamScoring,
        run: Runner,
        observe: Callable[[ServedModel, Scored], None],
        intake: JobIntake | None,
    ) -> None:
        self.registry = registry
        self.models = models
        self.streams = streams
        self.run = run
        self.observe = observe  # the service's per-request metrics
        self.intake = intake  # None: this host does not train (``lvad detectors run``)

    def variables(self, model: str) -> list[str] | None:
        try:
            active = self.registry.get_model(model).active
        except NotFoundError:
            return None
        return None if active is None else list(active.feature_names)

    def context_points(self, model: str) -> int:
        return self.models.get(model).detector.context_points(causal=True)

    def score(
        self,
        model: str,
        stream: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        context: int = 0,
    ) -> StreamResult:
        served = self.models.get(model)
        options = SeriesOptions(causal=True, context=values[:context] if context else None)
        name = stream_key(stream)
        timed: Timed = self.run(self.streams.score(served, name, values[context:], options))
        scored = timed.scored
        self.observe(served, scored)
        lower, mean, upper = expected_band(served.detector, values)
        return StreamResult(
            scored.alarm_score,
            scored.limit,
            scored.is_anomaly,
            Band(lower, mean, upper),
            str(served.version),
        )

    def train(
        self,
        model: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        variables: list[str],
        params: dict,
    ) -> str:
        if self.intake is None:
            raise LvadError("this command scores only: the service trains its models")
        return self.intake.from_arrays(model, values, variables, params, f"pull:{model}").id

    def job_state(self, job_id: str) -> JobState:
        return self.registry.get_job(job_id).state


def stream_key(stream: str) -> str:
    """A group's stream name as the registry keeps it: a long one is shortened, with a
    digest of the whole name so that distinct groups stay distinct."""
    if len(stream) <= STREAM_KEY:
        return stream
    return f"{stream[: STREAM_KEY - 17]}#{hashlib.sha256(stream.encode()).hexdigest()[:16]}"
