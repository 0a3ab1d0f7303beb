"""Domain metrics (prefix ``lvad_``). HTTP metrics come from prometheus-fastapi-instrumentator.

Scoring metrics carry a ``model`` label: one value per model name, bounded by the
names in the registry. Those of a model that is unloaded stay (counters keep their
totals); its ``lvad_model_info`` series goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.registry.records import JobState
from model.alarm import Scored

if TYPE_CHECKING:
    from app.scoring.models import ServedModel

MARGIN_BUCKETS = (-100, -50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 500)
SEVERITY_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 1.0)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
TRAINING_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
MODEL = ("model",)


class ServiceMetrics:
    """Every domain metric of one app, in its own (or the default) registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry  # where pull mode's metrics go too
        r = registry
        self.windows = Counter(
            "lvad_windows_scored_total", "Model windows scored.", MODEL, registry=r
        )
        self.points = Counter("lvad_points_scored_total", "Time steps scored.", MODEL, registry=r)
        self.anomalies = Counter(
            "lvad_anomalies_total",
            "Time steps flagged anomalous (is_anomaly).",
            MODEL,
            registry=r,
        )
        self.variable_anomalies = Counter(
            "lvad_variable_anomalies_total",
            "Anomalous time steps whose largest contribution came from this variable.",
            ["model", "variable"],
            registry=r,
        )
        self.margin = Histogram(
            "lvad_score_margin",
            "Alarm score (the larger of the step's unsmoothed and smoothed score) minus the "
            "threshold per time step, in nats (above 0 is anomalous).",
            MODEL,
            buckets=MARGIN_BUCKETS,
            registry=r,
        )
        self.severity = Histogram(
            "lvad_severity",
            "Calibrated severity per time step (1 - tail probability).",
            MODEL,
            buckets=SEVERITY_BUCKETS,
            registry=r,
        )
        self._margin_bounds = np.asarray(self.margin._upper_bounds)  # +Inf included
        self._severity_bounds = np.asarray(self.severity._upper_bounds)
        self.last_max_score = Gauge(
            "lvad_last_max_score",
            "Highest alarm score in the model's latest score request (nats), to compare with "
            "the threshold.",
            MODEL,
            registry=r,
        )
        self.inference = Histogram(
            "lvad_inference_duration_seconds",
            "Model time per model call (a micro-batch is one call).",
            MODEL,
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lvad_batch_windows",
            "Model windows per model call (micro-batches included).",
            MODEL,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "lvad_model_info",
            "The version each loaded model serves (value 1).",
            ["model", "version"],
            registry=r,
        )
        self.models_loaded = Gauge("lvad_models_loaded", "Models held in memory.", registry=r)
        self.model_load = Gauge(
            "lvad_model_load_seconds", "Time the model's latest load took.", MODEL, registry=r
        )
        self.model_load_failures = Counter(
            "lvad_model_load_failures_total",
            "Model files that could not be loaded.",
            MODEL,
            registry=r,
        )
        self.scoring_restarts = Counter(
            "lvad_scoring_process_restarts_total",
            "Scoring child processes started to replace one that died.",
            registry=r,
        )
        self.threshold = Gauge(
            "lvad_threshold", "Alarm threshold of the model's served version (nats).", MODEL,
            registry=r,
        )  # fmt: skip
        self.jobs = Gauge("lvad_jobs", "Training jobs by state.", ["state"], registry=r)
        self.drift = Gauge(
            "lvad_model_drift",
            "Largest drift statistic among the model's streams scored in the last hour: the "
            "share of a stream's last W alarm scores above the 98 % quantile of the "
            "validation scores (0.02 on data like the validation data; over 0.5: drifting).",
            MODEL,
            registry=r,
        )
        self.streams = Gauge(
            "lvad_streams", "Streams of the model scored in the last hour, by drift.",
            [*MODEL, "drifting"], registry=r,
        )  # fmt: skip
        self.regime_changes = Counter(
            "lvad_stream_regime_changes_total",
            "Regime changes of the model's streams: a third of a stream's last W points above "
            "the limit, its threshold refitted on the new level; or that level ended, the "
            "replaced threshold back.",
            MODEL,
            registry=r,
        )
        self.training = Histogram(
            "lvad_training_duration_seconds",
            "Duration of finished training jobs.",
            MODEL,
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.training_loss = Gauge(
            "lvad_training_loss", "Training loss of the model's latest job epoch.", MODEL,
            registry=r,
        )  # fmt: skip
        self.validation_loss = Gauge(
            "lvad_validation_loss", "Validation loss of the model's latest job epoch.", MODEL,
            registry=r,
        )  # fmt: skip

    def observe_call(self, served: ServedModel, windows: int, seconds: float) -> None:
        """One model call: its time and how many model windows it scored."""
        self.inference.labels(model=served.name).observe(seconds)
        self.batch_size.labels(model=served.name).observe(windows)
        self.windows.labels(model=served.name).inc(windows)

    def observe_scores(self, name: str, scored: Scored) -> None:
        """A request's per-step results against the threshold (the alarm scores; NaN, e.g.
        causal warm-up, is skipped)."""
        scores = scored.alarm_score.ravel()
        margin = scores - scored.limit.ravel()  # a stream's limit moves per point
        finite = np.isfinite(margin)
        everywhere = bool(finite.all())  # the common case: no masking
        self.points.labels(model=name).inc(scores.size)
        flagged = int(np.count_nonzero(scored.is_anomaly))
        if flagged:
            self.anomalies.labels(model=name).inc(flagged)
        if everywhere or finite.any():
            severity = scored.severity.ravel()
            if not everywhere:
                margin, severity, scores = margin[finite], severity[finite], scores[finite]
            _observe_many(self.margin.labels(model=name), margin, self._margin_bounds)
            _observe_many(self.severity.labels(model=name), severity, self._severity_bounds)
            self.last_max_score.labels(model=name).set(float(scores.max()))

    def set_model(self, served: ServedModel, load_seconds: float) -> None:
        """``served`` is the version its name now serves."""
        name, detector = served.name, served.detector
        # every series of the model from the start, at 0, so increase() sees its first rise
        for metric in (
            self.windows,
            self.points,
            self.anomalies,
            self.margin,
            self.severity,
            self.model_load_failures,
            self.training,
            self.drift,
            self.regime_changes,
        ):
            metric.labels(model=name)
        for variable in detector.feature_names:
            self.variable_anomalies.labels(model=name, variable=variable)
        self.unset_model(name)
        self.model_info.labels(model=name, version=str(served.version)).set(1)
        self.threshold.labels(model=name).set(detector.threshold.value)
        self.model_load.labels(model=name).set(load_seconds)
        self._count_loaded()

    def unset_model(self, name: str) -> None:
        """``name`` is no longer in memory."""
        for labels in [s for s in _label_sets(self.model_info) if s[0] == name]:
            self.model_info.remove(*labels)
        self._count_loaded()

    def _count_loaded(self) -> None:
        self.models_loaded.set(len({labels[0] for labels in _label_sets(self.model_info)}))

    def set_jobs(self, counts: dict[str, int]) -> None:
        for state in JobState:
            self.jobs.labels(state=state).set(counts.get(state, 0))


def _label_sets(metric: Gauge) -> list[tuple[str, ...]]:
    return list(metric._metrics)  # the label values of every child, in label order


def _observe_many(histogram: Histogram, values: np.ndarray, bounds: np.ndarray) -> None:
    """Histogram.observe for many values at once, without a Python loop per value;
    ``bounds``: the histogram's upper bounds, +Inf included, as an array."""
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        histogram._buckets[i].inc(int(counts[i]))
    histogram._sum.inc(float(values.sum()))
