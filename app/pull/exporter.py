"""The pull-mode metrics: each detector's latest scores and bands, and its health.

Scores, flags and bands are exported by a custom collector from the snapshot of each
detector's latest round: a round replaces its detector's snapshot whole, so a group
not scored in that round (query failed, data missing, group gone) is not exported
at all, and a snapshot older than its expiry (about three rounds) is not exported
either (a round stuck on a slow Prometheus exports nothing stale). Counters and the
round-duration histogram are ordinary prometheus_client metrics.

A group's labels are its ``group_by`` labels; one that would collide with a label of
these metrics (``model``, ``variable``, ``bound``) is exported as ``exported_<name>``,
as Prometheus renames colliding target labels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from app.pull.frames import SKIP_REASONS
from app.pull.host import Band
from app.pull.reader import ERROR_REASONS

RESERVED_LABELS = ("model", "variable", "bound")
BOUNDS = ("lower", "mean", "upper")
# errors of a round besides a failed query (ERROR_REASONS)
ROUND_ERRORS = ("ambiguous_series", "model_mismatch", "score_failed", "train_failed")
TRAINING_OUTCOMES = ("submitted", "succeeded", "failed", "queue_full", "too_little_data")
ROUND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def exported_label(name: str) -> str:
    return f"exported_{name}" if name in RESERVED_LABELS else name


def anomaly_ratio(alarm_score: float, threshold: float) -> float:
    """``alarm_score / threshold``: above 1 when the point is past its threshold (a score
    at the threshold but for rounding is 1 + ~1e-14 and not flagged, ``lvad_anomaly``).
    Scores are log-densities in nats and may in principle be negative: for a threshold
    <= 0 it is ``1 + (alarm_score - threshold) / max(|threshold|, 1)``, which keeps that
    meaning."""
    if threshold > 0:
        return alarm_score / threshold
    return 1.0 + (alarm_score - threshold) / max(abs(threshold), 1.0)


@dataclass(frozen=True)
class GroupScore:
    labels: dict[str, str]  # the group's labels, as exported (exported_label)
    ratio: float  # anomaly_ratio of the latest point
    is_anomaly: bool
    band: Band  # the latest point's expected band, variables in ``Snapshot.variables`` order
    observed: np.ndarray | None = None  # (D,) the latest point's values, the same order


@dataclass(frozen=True)
class Snapshot:
    """One detector's latest round, as exported."""

    variables: list[str]
    groups: list[GroupScore]
    expires_at: float  # Unix seconds; later, the groups are no longer exported
    model_version: str | None = None


class ScoreCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._last_success: dict[str, float] = {}
        self._latest_point: dict[str, float] = {}

    def publish(self, model: str, snapshot: Snapshot, latest_point: float | None) -> None:
        with self._lock:
            self._snapshots[model] = snapshot
            if latest_point is not None:
                self._latest_point[model] = latest_point

    def mark_success(self, model: str, when: float) -> None:
        with self._lock:
            self._last_success[model] = when

    def current(self, now: float | None = None) -> dict[str, Snapshot]:
        """Each detector's snapshot that has not expired."""
        now = time.time() if now is None else now
        with self._lock:
            return {m: s for m, s in self._snapshots.items() if s.expires_at >= now}

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        with self._lock:  # one consistent view: scores and times of the same rounds
            snapshots = {m: s for m, s in self._snapshots.items() if s.expires_at >= now}
            models = sorted(set(self._snapshots) | set(self._last_success))
            success, latest = dict(self._last_success), dict(self._latest_point)
        yield from score_families(snapshots)
        series = Metric("lvad_detector_series", "Groups exported by the latest round", "gauge")
        version = Metric(
            "lvad_detector_model_version",
            "Version that scored the latest round (the value is 1)",
            "gauge",
        )
        last = Metric(
            "lvad_detector_last_success_timestamp_seconds",
            "When a round last read and scored without error",
            "gauge",
        )
        point = Metric(
            "lvad_detector_latest_point_timestamp_seconds",
            "Time of the newest point scored",
            "gauge",
        )
        for model in models:
            snapshot = snapshots.get(model)
            series.add_sample(
                series.name, {"model": model}, len(snapshot.groups) if snapshot else 0
            )
            if snapshot is not None and snapshot.model_version is not None:
                labels = {"model": model, "version": snapshot.model_version}
                version.add_sample(version.name, labels, 1.0)
            if model in success:
                last.add_sample(last.name, {"model": model}, success[model])
            if model in latest:
                point.add_sample(point.name, {"model": model}, latest[model])
        yield from (series, version, last, point)


def score_families(snapshots: dict[str, Snapshot]) -> Iterator[Metric]:
    score = Metric(
        "lvad_anomaly_score",
        "Latest point's alarm score over its threshold (above 1: anomalous)",
        "gauge",
    )
    flag = Metric("lvad_anomaly", "1 if the latest point is anomalous, else 0", "gauge")
    expected = Metric(
        "lvad_expected",
        "Expected band of the latest point: the 5 % and 95 % "
        "quantiles and the mean of the model's posterior predictive",
        "gauge",
    )
    observed = Metric(
        "lvad_observed",
        "The latest point's value as read, per variable (what lvad_expected describes)",
        "gauge",
    )
    for model, snapshot in sorted(snapshots.items()):
        for group in snapshot.groups:
            labels = {"model": model, **group.labels}
            score.add_sample(score.name, labels, group.ratio)
            flag.add_sample(flag.name, labels, float(group.is_anomaly))
            for bound in BOUNDS:
                values = getattr(group.band, bound)
                for variable, value in zip(snapshot.variables, values, strict=True):
                    point = {**labels, "variable": variable, "bound": bound}
                    expected.add_sample(expected.name, point, float(value))
            if group.observed is not None:
                for variable, value in zip(snapshot.variables, group.observed, strict=True):
                    observed.add_sample(observed.name, {**labels, "variable": variable}, value)
    yield from (score, flag, expected, observed)


class PullMetrics:
    """Every pull-mode metric, in ``registry`` (the service's, or a test's own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scores = ScoreCollector()
        registry.register(self.scores)
        self.errors = Counter(
            "lvad_detector_errors",
            "Rounds' errors by reason",
            ["model", "reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "lvad_detector_groups_skipped",
            "Groups not scored in a round, by reason",
            ["model", "reason"],
            registry=registry,
        )
        self.points = Counter(
            "lvad_detector_points_scored", "Points scored (per group)", ["model"], registry=registry
        )
        self.trainings = Counter(
            "lvad_detector_trainings",
            "Training attempts by outcome",
            ["model", "outcome"],
            registry=registry,
        )
        self.round_seconds = Histogram(
            "lvad_detector_round_duration_seconds",
            "Duration of a scoring round: queries, alignment, model calls",
            ["model"],
            buckets=ROUND_BUCKETS,
            registry=registry,
        )

    def add_detector(self, model: str) -> None:
        """Every label combination of ``model`` at 0, so rates exist before the first event."""
        for reason in (*ERROR_REASONS, *ROUND_ERRORS):
            self.errors.labels(model, reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(model, reason)
        for outcome in TRAINING_OUTCOMES:
            self.trainings.labels(model, outcome)
        self.points.labels(model)
        self.round_seconds.labels(model)
