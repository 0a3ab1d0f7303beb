"""``ModelHost`` on the service's named models: what pull mode scores and trains with.

Scoring goes the way every score request goes, through the backend built at start-up
(``app/scoring/backends.py``), and is counted in the same metrics; the runner's
scheduler threads hand the call to the event loop (``run``) and wait for it. Training
goes through the job intake, the queue's bound and the promotion gate, as an upload
would. The expected band comes from the served detector's decoder, in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np

from app.errors import NotFoundError
from app.pull.host import Band, StreamResult
from app.registry.intake import JobIntake
from app.registry.records import JobState
from app.registry.registry import Registry
from app.scoring.backends import ScoringBackend, SeriesOptions, Timed
from app.scoring.models import LoadedModels, ServedModel
from model.alarm import Scored
from model.band import expected_band
from model.errors import LvadError

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]  # runs a coroutine from a worker thread


class ServiceHost:
    def __init__(
        self,
        registry: Registry,
        models: LoadedModels,
        backend: ScoringBackend,
        run: Runner,
        observe: Callable[[ServedModel, Scored], None],
        intake: JobIntake | None,
    ) -> None:
        self.registry = registry
        self.models = models
        self.backend = backend
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
        config = self.models.get(model).detector.config
        return config.window + config.smoothing - 1

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
        timed: Timed = self.run(self.backend.score_series(served, values[context:], options))
        scored = timed.scored
        self.observe(served, scored)
        lower, mean, upper = expected_band(served.detector, values)
        return StreamResult(
            scored.alarm_score,
            np.full(len(scored.alarm_score), scored.threshold),
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
