"""GET /metrics: domain and HTTP metrics move by the expected amounts."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FEATURES

M = "default"  # the model the tests score with


def samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics, name, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_scoring_moves_the_counters(client, synthetic, detector):
    before = samples(client)
    windows = [synthetic.test[i : i + 16].tolist() for i in (0, 195)]
    body = client.post("/v1/score", json={"windows": windows}).json()
    flagged = sum(w["anomalies"] for w in body["windows"])
    after = samples(client)
    assert (
        value(after, "lvad_windows_scored_total", model=M)
        - value(before, "lvad_windows_scored_total", model=M)
        == 2
    )
    assert (
        value(after, "lvad_points_scored_total", model=M)
        - value(before, "lvad_points_scored_total", model=M)
        == 32
    )
    assert (
        value(after, "lvad_anomalies_total", model=M)
        - value(before, "lvad_anomalies_total", model=M)
        == flagged
    )
    assert (
        value(after, "lvad_score_margin_count", model=M)
        - value(before, "lvad_score_margin_count", model=M)
        == 32
    )
    assert value(after, "lvad_inference_duration_seconds_count", model=M) > value(
        before, "lvad_inference_duration_seconds_count"
    )
    by_variable = sum(
        value(after, "lvad_variable_anomalies_total", model=M, variable=name) for name in FEATURES
    )
    assert by_variable == value(after, "lvad_anomalies_total", model=M)
    # the gauge and the margin histogram are about flagging: they observe the alarm score
    highest = max(max(w["alarm_score"]) for w in body["windows"])
    assert value(after, "lvad_last_max_score", model=M) == highest


def test_model_gauges(client, detector):
    metrics = samples(client)
    assert value(metrics, "lvad_model_info", model=M, version="1") == 1
    assert value(metrics, "lvad_threshold", model=M) == detector.threshold.value
    assert value(metrics, "lvad_model_load_seconds", model=M) > 0
    assert value(metrics, "lvad_jobs", state="queued") == 0


def test_http_metrics_from_the_instrumentator(client):
    client.get("/v1/models")
    client.get("/v1/models")
    metrics = samples(client)
    hits = [
        v
        for (name, labels), v in metrics.items()
        if name == "http_requests_total" and ("handler", "/v1/models") in labels
    ]
    assert sum(hits) >= 2
    assert not any(("handler", "/metrics") in labels for (_, labels) in metrics)


def test_score_margin_histogram_buckets_around_threshold(client, synthetic):
    before = samples(client)
    window = np.asarray(synthetic.test[195:211]).tolist()  # holds the spike
    body = client.post("/v1/score", json={"windows": [window]}).json()
    after = samples(client)
    below = value(after, "lvad_score_margin_bucket", model=M, le="0.0") - value(
        before, "lvad_score_margin_bucket", model=M, le="0.0"
    )
    total = value(after, "lvad_score_margin_count", model=M) - value(
        before, "lvad_score_margin_count", model=M
    )
    assert total == 16
    # above 0 exactly where the step is flagged: the margin is the alarm score's
    assert total - below == body["windows"][0]["anomalies"] > 0
