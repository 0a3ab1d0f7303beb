"""What pull mode needs from the service that holds the named models: ``ModelHost``.

The runner (``app.pull.runner``) reads Prometheus, aligns the series and exports the
results; every model operation goes through this Protocol, which the service
implements on its named models. A host is called from the runner's scheduler
threads: one detector's calls never overlap, different detectors' calls may run at
the same time (one model name belongs to one detector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from app.registry.records import JobState


@dataclass(frozen=True)
class Band:
    """The expected band of one point, per variable in the model's order, original units
    (``model.band.expected_band``)."""

    lower: np.ndarray  # (D,) the 5 % quantile of the posterior predictive
    mean: np.ndarray  # (D,) its mean
    upper: np.ndarray  # (D,) its 95 % quantile


@dataclass(frozen=True)
class StreamResult:
    """The scored points of one stream (the rows after the context), oldest first."""

    alarm_score: np.ndarray  # (m,) what meets the threshold, nats (model/alarm.py)
    threshold: np.ndarray  # (m,) the threshold each point was judged by, nats
    is_anomaly: np.ndarray  # (m,) bool, the shipped flag
    expected: Band  # the band of the latest point (the last row)
    model_version: str  # the version that scored, as the service names it

    def __post_init__(self) -> None:
        m = len(self.alarm_score)
        if m == 0 or len(self.threshold) != m or len(self.is_anomaly) != m:
            raise ValueError("alarm_score, threshold and is_anomaly need one value per point")


@runtime_checkable
class ModelHost(Protocol):
    """The named models as the runner uses them.

    Values are always finite (n, D) float64 arrays in the variables' order and
    original units: the runner fills gaps itself (linear interpolation in time within
    each group, as model.data does) because only it knows the step grid and where one
    group ends; timestamps are (n,) ``datetime64[ns]`` UTC, one per row.
    """

    def variables(self, model: str) -> list[str] | None:
        """The active version's variable names, in the order ``score`` takes them;
        None while the name has no active version (not trained yet)."""
        ...

    def context_points(self, model: str) -> int:
        """How many points before the first new one scoring needs so that the new
        points have full context: for the LSTM-VAE scored causally (the window ending at
        each point, then the ranking's widest trailing average, which the flags need
        too), ``Detector.context_points(causal=True)``: ``window + 2 x smoothing - 2``.
        Only called when ``variables(model)`` is not None."""
        ...

    def score(
        self,
        model: str,
        stream: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        context: int = 0,
    ) -> StreamResult:
        """Score the rows ``values[context:]`` of one group's stream with the active
        version, causally: each point only from itself and the rows before it; the first
        ``context`` rows are history (already scored, or older than what is reported)
        and only give the model its context.

        ``stream`` names the group (the detector's model and the group's labels,
        ``node{instance="a:9100"}``): the service keeps per-stream state (alarm
        thresholds that adapt, hysteresis) under it and updates it with the reported
        rows only. The runner sends at least ``context_points(model)`` rows of
        context, so the first reported row is not warm-up.

        Returns one alarm score, threshold and flag per reported row (n - context) and
        the expected band of the last row. Raises ``model.errors.LvadError`` (e.g.
        ``FeatureMismatchError`` when the active version's variables changed): the
        runner counts it and skips the group this round.
        """
        ...

    def train(
        self,
        model: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        variables: list[str],
        params: dict,
    ) -> str:
        """Queue a training job for ``model`` (creating the name on its first version) on
        ``values`` (n, D) named ``variables``; ``params`` are model parameters as
        ``ModelConfig().replace`` takes them. Several groups arrive concatenated one after
        the other, so ``timestamps`` increase within a group and may step back where the
        next begins: train on the rows in their order and keep the timestamps as
        information only. The job's result goes through the service's promotion gate.

        Returns the job's id at once. Raises ``app.errors.TooManyJobs`` when the job
        queue is full (the runner backs off and tries again later), ``LvadError`` for a
        job that cannot be accepted at all.
        """
        ...

    def job_state(self, job_id: str) -> JobState:
        """Where the job is (``JobState.finished`` once it ended)."""
        ...
