"""The exported series: the latest round's groups only, labels that cannot collide,
nothing after expiry, every counter present from the start."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.pull.exporter import GroupScore, PullMetrics, Snapshot, anomaly_ratio, exported_label
from app.pull.host import Band
from tests.docker.queries import PULL_SERIES
from tests.pull.exposition import parse_samples


def samples(registry: CollectorRegistry) -> dict[str, list]:
    return parse_samples(generate_latest(registry).decode())


def group(labels: dict, ratio: float) -> GroupScore:
    band = Band(np.array([1.0, 10.0]), np.array([2.0, 20.0]), np.array([3.0, 30.0]))
    exported = {exported_label(k): v for k, v in labels.items()}
    return GroupScore(exported, ratio, ratio > 1, band, np.array([2.5, 19.0]))


def test_latest_groups_are_exported_with_their_band():
    registry = CollectorRegistry()
    metrics = PullMetrics(registry)
    metrics.add_detector("db")
    groups = [group({"instance": "a", "model": "ssd"}, 0.5), group({"instance": "b"}, 1.5)]
    snapshot = Snapshot(["cpu", "io"], groups, time.time() + 60, "3")
    metrics.scores.publish("db", snapshot, latest_point=1234.0)
    found = samples(registry)
    scores = {s.labels["instance"]: s for s in found["lvad_anomaly_score"]}
    assert scores["a"].labels == {"model": "db", "instance": "a", "exported_model": "ssd"}
    assert scores["a"].value == 0.5 and scores["b"].value == 1.5
    flags = {s.labels["instance"]: s.value for s in found["lvad_anomaly"]}
    assert flags == {"a": 0.0, "b": 1.0}
    expected = [s for s in found["lvad_expected"] if s.labels["instance"] == "b"]
    assert {(s.labels["variable"], s.labels["bound"]): s.value for s in expected} == {
        ("cpu", "lower"): 1.0, ("cpu", "mean"): 2.0, ("cpu", "upper"): 3.0,
        ("io", "lower"): 10.0, ("io", "mean"): 20.0, ("io", "upper"): 30.0}  # fmt: skip
    assert [s.value for s in found["lvad_detector_series"]] == [2.0]
    assert found["lvad_detector_model_version"][0].labels == {"model": "db", "version": "3"}
    assert found["lvad_detector_latest_point_timestamp_seconds"][0].value == 1234.0
    # a new round replaces the groups whole: b was not scored, so it is gone
    metrics.scores.publish("db", Snapshot(["cpu", "io"], groups[:1], time.time() + 60), None)
    assert [s.labels["instance"] for s in samples(registry)["lvad_anomaly_score"]] == ["a"]


def test_an_expired_round_exports_no_score():
    registry = CollectorRegistry()
    metrics = PullMetrics(registry)
    metrics.scores.publish("db", Snapshot(["x"], [group({"h": "a"}, 0.2)], time.time() - 1), 1.0)
    found = samples(registry)
    assert "lvad_anomaly_score" not in found and "lvad_expected" not in found
    assert [s.value for s in found["lvad_detector_series"]] == [0.0]


def test_every_reason_and_outcome_starts_at_zero():
    registry = CollectorRegistry()
    PullMetrics(registry).add_detector("db")
    found = samples(registry)
    reasons = {s.labels["reason"] for s in found["lvad_detector_errors_total"]}
    assert {"unreachable", "timeout", "bad_query", "bad_response", "ambiguous_series"} <= reasons
    skipped = {s.labels["reason"] for s in found["lvad_detector_groups_skipped_total"]}
    assert {"missing_variable", "missing_data", "stale", "too_many_groups"} <= skipped
    assert all(s.value == 0 for s in found["lvad_detector_errors_total"])
    assert found["lvad_detector_round_duration_seconds_count"][0].value == 0


@pytest.mark.parametrize(
    ("alarm", "threshold", "above_one"),
    [(12.0, 10.0, True), (9.0, 10.0, False), (-1.0, -2.0, True), (-3.0, -2.0, False),
     (0.5, 0.0, True), (-0.5, 0.0, False)],
)  # fmt: skip
def test_the_ratio_is_above_one_exactly_past_the_threshold(alarm, threshold, above_one):
    assert (anomaly_ratio(alarm, threshold) > 1) is above_one


def test_the_observed_values_go_beside_the_band_and_every_series_is_known():
    registry = CollectorRegistry()
    metrics = PullMetrics(registry)
    metrics.add_detector("db")
    snapshot = Snapshot(["cpu", "io"], [group({"instance": "a"}, 0.5)], time.time() + 60, "1")
    metrics.scores.publish("db", snapshot, latest_point=1234.0)
    metrics.scores.mark_success("db", 1235.0)
    metrics.round_seconds.labels(model="db").observe(0.1)
    found = samples(registry)
    observed = {s.labels["variable"]: s.value for s in found["lvad_observed"]}
    assert observed == {"cpu": 2.5, "io": 19.0}
    # what the dashboard and the rules may name (tests/docker/queries.py)
    exposed = {name for name, values in found.items() if values and not name.endswith("_created")}
    assert exposed == PULL_SERIES
