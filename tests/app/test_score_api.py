"""POST /v1/score: both input forms, context, explanations, and every refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.scoring import step_scores
from tests.conftest import FEATURES


def series_body(values: np.ndarray, names=FEATURES, timestamps=None) -> dict:
    body = {"variables": {name: values[:, i].tolist() for i, name in enumerate(names)}}
    if timestamps is not None:
        body["timestamps"] = timestamps
    return body


def test_windows_are_scored_per_step(client, synthetic, detector):
    windows = [synthetic.test[i : i + 16].tolist() for i in (0, 190, 400)]
    response = client.post("/v1/score", json={"windows": windows})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == 1
    assert body["variables"] == FEATURES
    assert len(body["windows"]) == 3
    first = body["windows"][0]
    assert len(first["score"]) == 16 == len(first["severity"]) == len(first["warm_up"])
    expected = detector.score_windows(np.asarray(windows))
    np.testing.assert_allclose([w["score"] for w in body["windows"]], expected.score, rtol=1e-6)
    alarm = [w["alarm_score"] for w in body["windows"]]
    np.testing.assert_allclose(alarm, expected.alarm_score, rtol=1e-6)
    # max(unsmoothed, smoothed score): at least the smoothed score, formed from the
    # smoothed log_prob (summed over the variables) and kl that come back
    log_prob = np.asarray([w["log_prob"] for w in body["windows"]])
    kl = np.asarray([w["kl"] for w in body["windows"]])
    smoothed = step_scores(log_prob[..., None], kl, detector.window)
    assert (np.asarray(alarm) >= smoothed - 1e-6).all()
    # windows of T steps: the flag is the alarm score's, per step (no confirmation)
    np.testing.assert_array_equal([w["is_anomaly"] for w in body["windows"]], expected.is_anomaly)
    for w in body["windows"]:
        assert w["is_anomaly"] == [a > body["threshold"] for a in w["alarm_score"]]
    # the spike (rows 200-203) lies in the second window and is flagged and explained
    spike = body["windows"][1]
    flagged = [i for i, flag in enumerate(spike["is_anomaly"]) if flag]
    assert spike["anomalies"] == len(flagged)
    in_spike = [i for i in flagged if 10 <= i < 14]
    assert in_spike
    assert all(spike["top_variables"][i][0]["variable"] == "beta" for i in in_spike)
    assert [e["top_variables"][0]["variable"] for e in spike["events"]] == ["beta"]
    assert all(w["events"] == [] for w in body["windows"] if not w["anomalies"])
    assert all(
        top is None
        for top, flag in zip(spike["top_variables"], spike["is_anomaly"], strict=True)
        if not flag
    )


def test_named_columns_in_any_order(client, synthetic):
    window = synthetic.test[:16]
    plain = client.post("/v1/score", json={"windows": [window.tolist()]}).json()
    order = [2, 0, 3, 1]
    body = {"windows": [window[:, order].tolist()], "variables": [FEATURES[i] for i in order]}
    named = client.post("/v1/score", json=body).json()
    np.testing.assert_allclose(named["windows"][0]["score"], plain["windows"][0]["score"])


def test_longer_windows_are_scored_as_series(client, synthetic, detector):
    windows = [synthetic.test[:40].tolist(), synthetic.test[40:80].tolist()]
    body = client.post("/v1/score", json={"windows": windows}).json()
    assert len(body["windows"][0]["score"]) == 40
    np.testing.assert_allclose(
        body["windows"][1]["score"], detector.score(synthetic.test[40:80]).score, rtol=1e-9
    )


def test_series_with_timestamps(client, synthetic):
    stamps = [f"2024-01-01T00:{m:02d}:00Z" for m in range(50)]
    response = client.post(
        "/v1/score", json={"series": series_body(synthetic.test[:50], timestamps=stamps)}
    )
    assert response.status_code == 200
    series = response.json()["series"]
    assert len(series["score"]) == 50 == len(series["alarm_score"])
    assert series["timestamps"][3].startswith("2024-01-01T00:03:00")
    assert series["warm_up"][:15] == [True] * 15 and not any(series["warm_up"][15:])


def test_events_group_flagged_steps_and_rank_their_variables(client, synthetic, detector):
    values = synthetic.test[150:260]  # the spike in beta at test rows 200-203: steps 50-53
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="min")
    body = series_body(values, timestamps=stamps.strftime("%Y-%m-%dT%H:%M:%SZ").tolist())
    series = client.post("/v1/score", json={"series": body}).json()["series"]
    events, flags = series["events"], series["is_anomaly"]
    expected = detector.events(detector.score(values))
    assert [(e["start"], e["end"] + 1, e["peak"]) for e in events] == [
        (e.start, e.end, e.peak) for e in expected
    ]
    in_events = [i for e in events for i in range(e["start"], e["end"] + 1) if flags[i]]
    assert in_events == [i for i, flag in enumerate(flags) if flag]
    spike = next(e for e in events if e["start"] <= 53 and e["end"] >= 50)
    assert spike["top_variables"][0]["variable"] == "beta"
    assert spike["alarm_score"] == max(series["alarm_score"][spike["start"] : spike["end"] + 1])
    assert spike["alarm_score"] == series["alarm_score"][spike["peak"]]
    assert spike["start_time"] == series["timestamps"][spike["start"]]
    assert spike["end_time"] == series["timestamps"][spike["end"]]


def test_a_value_beyond_any_seen_is_flagged_and_named(client, synthetic):
    values = synthetic.test[:60].copy()
    values[40, 2] = 1e20  # log p = -inf for that variable: an infinite score
    series = client.post("/v1/score", json={"series": series_body(values)}).json()["series"]
    assert series["is_anomaly"][40]
    assert series["severity"][40] == max(s for s in series["severity"] if s is not None)
    assert series["alarm_score"][40] is None  # JSON has no infinity
    (event,) = [e for e in series["events"] if e["start"] <= 40 <= e["end"]]
    assert event["top_variables"][0]["variable"] == FEATURES[2]
    assert series["top_variables"][40][0] == {"variable": FEATURES[2], "share": 1.0}


def test_context_removes_warm_up_and_changes_first_scores(client, synthetic):
    new, before = synthetic.test[100:140], synthetic.test[70:100]
    alone = client.post("/v1/score", json={"series": series_body(new)}).json()["series"]
    with_context = client.post(
        "/v1/score", json={"series": series_body(new), "context": series_body(before)}
    ).json()["series"]
    assert len(with_context["score"]) == 40
    assert not any(with_context["warm_up"])
    assert alone["warm_up"][0]
    assert not np.allclose(alone["score"][:15], with_context["score"][:15])


def test_causal_scoring_leaves_warm_up_empty(client, synthetic):
    body = {"series": series_body(synthetic.test[:40]), "causal": True}
    series = client.post("/v1/score", json=body).json()["series"]
    assert series["score"][:15] == [None] * 15 == series["alarm_score"][:15]
    assert all(isinstance(v, float) for v in series["score"][15:])
    assert all(isinstance(v, float) for v in series["alarm_score"][15:])


def test_missing_values_in_a_series_are_filled(client, synthetic):
    body = series_body(synthetic.test[:40])
    body["variables"]["alpha"][5] = None
    assert client.post("/v1/score", json={"series": body}).status_code == 200


def test_explain_all_and_none(client, synthetic):
    window = [synthetic.test[:16].tolist()]
    every = client.post("/v1/score", json={"windows": window, "explain": "all", "top_k": 2})
    assert all(top is None or len(top) <= 2 for top in every.json()["windows"][0]["top_variables"])
    assert any(top for top in every.json()["windows"][0]["top_variables"])
    none = client.post("/v1/score", json={"windows": window, "explain": "none"}).json()
    assert none["windows"][0]["top_variables"] == [None] * 16


def refusal(client, body, status=422, **kwargs):
    response = client.post("/v1/score", json=body, **kwargs)
    assert response.status_code == status, response.text
    return response.json()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "exactly one"),
        ({"windows": []}, "windows"),
        ({"windows": [[[1.0, 2.0, 3.0, 4.0]] * 16, [[1.0, 2.0, 3.0, 4.0]] * 15]}, "ragged"),
        ({"windows": [[[1.0, 2.0, 3.0, 4.0]] * 15 + [[1.0, 2.0]]]}, "ragged"),
        ({"windows": [[["a", 2.0, 3.0, 4.0]] * 16]}, "[0][0][0] is str, not a number"),
        ({"windows": [[[1.0, None, 3.0, 4.0]] * 16]}, "[0][0][1] is NoneType, not a number"),
        ({"windows": [[[1.0, 2.0, 3.0, 4.0]] * 16, [[1.0, {}, 3.0, 4.0]] * 16]}, "[1][0][1]"),
        ({"windows": [[1.0, 2.0, 3.0, 4.0]] * 16}, "[0][0] is float, expected a non-empty list"),
        (
            {"windows": [[[1.0, 2.0, 3.0, 4.0]] * 16], "context": {"variables": {"a": [1.0]}}},
            "apply to",
        ),
        # a series with the model's variables (others are refused before anything else)
        ({"series": {"variables": {name: [] for name in FEATURES}}}, "empty"),
        (
            {"series": {"variables": {**{n: [1.0] for n in FEATURES}, "beta": [1.0, 2.0]}}},
            "different lengths",
        ),
    ],
)
def test_malformed_requests_are_422_naming_the_problem(client, body, needle):
    assert needle in str(refusal(client, body))


def test_nan_and_infinity_literals_are_refused(client):
    for literal in ("NaN", "Infinity", "-Infinity"):
        row = f"[{literal}, 1, 2, 3]"
        raw = '{"windows": [[' + ",".join([row] * 16) + "]]}"
        response = client.post(
            "/v1/score", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, literal
        assert "finite" in response.text


def test_non_json_body_is_a_client_error(client):
    response = client.post(
        "/v1/score", content=b"\x00not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert response.json()["message"]


def test_wrong_variables_are_named(client, synthetic):
    three = refusal(client, {"windows": [synthetic.test[:16, :3].tolist()]})
    assert three["error"] == "feature_mismatch" and "expects 4" in three["message"]
    wrong = refusal(
        client,
        {
            "windows": [synthetic.test[:16].tolist()],
            "variables": ["alpha", "beta", "gamma", "omega"],
        },
    )
    assert wrong["field"] == "variables"
    body = series_body(synthetic.test[:20], names=["alpha", "beta", "gamma", "omega"])
    missing = refusal(client, {"series": body})
    assert "delta" in missing["message"] and missing["field"].startswith("series")


def test_short_windows_and_bad_timestamps(client, synthetic):
    short = refusal(client, {"windows": [synthetic.test[:8].tolist()]})
    assert "at least 16" in short["message"]
    stamps = ["2024-01-01T00:00:00Z"] * 20
    duplicate = refusal(client, {"series": series_body(synthetic.test[:20], timestamps=stamps)})
    assert "timestamp" in duplicate["message"]


def test_limits(tmp_path, model_file):
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from app.main import create_app
    from tests.app.conftest import make_settings, seeded_store

    settings = make_settings(
        tmp_path, max_windows=2, max_window_length=20, max_series_points=30, max_body_bytes=20_000
    )
    seeded_store(settings.store, model_file)
    window = [[0.0, 1.0, 5.0, 100.0]] * 16
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        assert "limit is 2" in refusal(client, {"windows": [window] * 3})["message"]
        assert "limit is 20" in refusal(client, {"windows": [window + window]})["message"]
        series = series_body(np.zeros((31, 4)))
        assert "limit is 30" in refusal(client, {"series": series})["message"]
        huge = {"windows": [window] * 2, "padding": "x" * 30_000}
        too_large = client.post("/v1/score", json=huge)
        assert too_large.status_code == 413 and "Too Large" in too_large.text
        assert client.get("/healthz").status_code == 200
