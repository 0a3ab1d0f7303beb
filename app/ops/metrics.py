"""Domain metrics (prefix ``lvad_``). HTTP metrics come from prometheus-fastapi-instrumentator."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
MARGIN_BUCKETS = (-100, -50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 500)
SEVERITY_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 1.0)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
TRAINING_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class ServiceMetrics:
    """Every domain metric of one app, in its own (or the default) registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.windows = Counter("lvad_windows_scored_total", "Windows scored.", registry=r)
        self.points = Counter("lvad_points_scored_total", "Time steps scored.", registry=r)
        self.anomalies = Counter(
            "lvad_anomalies_total",
            "Time steps flagged anomalous (alarm score above threshold).",
            registry=r,
        )
        self.variable_anomalies = Counter(
            "lvad_variable_anomalies_total",
            "Anomalous time steps whose largest contribution came from this variable.",
            ["variable"],
            registry=r,
        )
        self.margin = Histogram(
            "lvad_score_margin",
            "Alarm score (the larger of the step's unsmoothed and smoothed score) minus the "
            "threshold per time step, in nats (above 0 is anomalous).",
            buckets=MARGIN_BUCKETS,
            registry=r,
        )
        self.severity = Histogram(
            "lvad_severity",
            "Calibrated severity per time step (1 - tail probability).",
            buckets=SEVERITY_BUCKETS,
            registry=r,
        )
        self.last_max_score = Gauge(
            "lvad_last_max_score",
            "Highest alarm score in the latest score request (nats), to compare with the "
            "threshold.",
            registry=r,
        )
        self.inference = Histogram(
            "lvad_inference_duration_seconds",
            "Model time per scored batch.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lvad_batch_windows",
            "Windows per model call (micro-batches included).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "lvad_model_info", "The active model version (value 1).", ["version"], registry=r
        )
        self.model_load = Gauge(
            "lvad_model_load_seconds", "Time the latest model load took.", registry=r
        )
        self.model_load_failures = Counter(
            "lvad_model_load_failures_total", "Model files that could not be loaded.", registry=r
        )
        self.scoring_restarts = Counter(
            "lvad_scoring_process_restarts_total",
            "Scoring child processes started to replace one that died.",
            registry=r,
        )
        self.threshold = Gauge(
            "lvad_threshold", "Alarm threshold of the active model (nats).", registry=r
        )
        self.jobs = Gauge("lvad_jobs", "Training jobs by state.", ["state"], registry=r)
        self.training = Histogram(
            "lvad_training_duration_seconds",
            "Duration of finished training jobs.",
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.training_loss = Gauge(
            "lvad_training_loss", "Training loss of the latest epoch of any job.", registry=r
        )
        self.validation_loss = Gauge(
            "lvad_validation_loss", "Validation loss of the latest epoch of any job.", registry=r
        )

    def observe_scores(
        self, scores: np.ndarray, severity: np.ndarray, flags: np.ndarray, threshold: float
    ) -> None:
        """Record a request's per-step results: ``scores`` are the alarm scores, the ones the
        threshold applies to (NaN, e.g. causal warm-up, is skipped)."""
        finite = np.isfinite(scores)
        self.points.inc(int(scores.size))
        self.anomalies.inc(int(flags.sum()))
        if finite.any():
            margins = scores[finite] - threshold
            # histogram observe per value is slow for big requests: bucket with numpy
            _observe_many(self.margin, margins)
            _observe_many(self.severity, severity[finite])
            self.last_max_score.set(float(scores[finite].max()))

    def set_model(
        self, version: int, threshold: float, load_seconds: float, variables: list[str]
    ) -> None:
        for name in variables:  # a series per variable from the start, so increase() sees 0 -> 1
            self.variable_anomalies.labels(variable=name)
        self.model_info.clear()
        self.model_info.labels(version=str(version)).set(1)
        self.threshold.set(threshold)
        self.model_load.set(load_seconds)

    def set_jobs(self, counts: dict[str, int]) -> None:
        for state in JOB_STATES:
            self.jobs.labels(state=state).set(counts.get(state, 0))


def _observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Histogram.observe for many values at once, without a Python loop per value."""
    bounds = np.asarray(histogram._upper_bounds)  # includes +Inf
    index = np.searchsorted(bounds, values, side="left")
    counts = np.bincount(index, minlength=len(bounds))
    for i, count in enumerate(counts):
        if count:
            histogram._buckets[i].inc(int(count))
    histogram._sum.inc(float(values.sum()))
