"""Streams: a series sent with ``stream`` is the next chunk of that stream, its flags
decided by the stream's adaptive threshold carried across requests and restarts
(app/scoring/streams.py, app/registry/streams.py), on a real store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.errors import ConflictError, LimitError
from app.main import create_app
from app.registry import tables as t
from app.registry.registry import Registry
from app.registry.streams import StreamStates
from tests.app.conftest import make_settings, seeded_store
from tests.app.test_score_api import series_body

CHUNK = 100


def chunk_body(values: np.ndarray, start: int, stream: str = "host-1", **extra) -> dict:
    """Rows start..start+CHUNK of ``values`` as the next chunk, the 2T rows before as context."""
    body = {"series": series_body(values[start : start + CHUNK]), "stream": stream, **extra}
    if start:
        body["context"] = series_body(values[max(0, start - 32) : start])
    return body


def expected_chunks(detector, values: np.ndarray, starts: list[int]):
    state, flags = detector.stream_state(), []
    for start in starts:
        context = values[max(0, start - 32) : start] if start else None
        scored, state = detector.score_stream(values[start : start + CHUNK], state, context)
        flags.extend(scored.is_anomaly.tolist())
    return flags, state


@pytest.mark.parametrize("scoring_process", [False, True], ids=["in-process", "child"])
def test_a_stream_carries_its_threshold_across_requests_and_a_restart(
    tmp_path, model_file, synthetic, detector, scoring_process
):
    settings = make_settings(tmp_path, scoring_process=scoring_process)
    seeded_store(settings.store, model_file)
    values, starts = synthetic.test, [0, 100, 200, 300, 400]
    flags = []
    for part in (starts[:3], starts[3:]):  # a restart between the two parts
        with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
            for start in part:
                body = client.post("/v1/score", json=chunk_body(values, start)).json()
                flags.extend(body["series"]["is_anomaly"])
    expected_flags, state = expected_chunks(detector, values, starts)
    assert flags == expected_flags
    report = body["stream"]
    assert report["name"] == "host-1" and report["points"] == state.seen == 500
    assert report["limit"] == pytest.approx(state.spot.limit) == pytest.approx(body["threshold"])
    assert any(flags[200:204]) and any(flags[400:440])  # the spike and the shift


def test_a_level_shift_pages_once_then_drifts(client, synthetic):
    shifted = synthetic.test.copy()
    shifted[:, 3] += 25.0  # a new level for good, from the first point
    alarms = []
    for start in range(0, 600, CHUNK):
        body = client.post("/v1/score", json=chunk_body(shifted, start, "moved")).json()
        alarms.extend(body["series"]["is_anomaly"])
    report = body["stream"]
    assert report["regime_changes"] >= 1 and report["drifting"] and report["drift"] > 0.5
    assert np.mean(alarms[:160]) > 0.5  # flagged until the threshold follows the new level
    assert np.mean(alarms[450:]) < 0.1  # then judged against it: quiet after the shift,
    assert np.mean(alarms[400:440]) > 0.5  # which the new level does not hide
    metrics = client.get("/metrics").text
    assert 'lvad_model_drift{model="default"} ' in metrics
    drift = float(metrics.split('lvad_model_drift{model="default"} ')[1].split()[0])
    assert drift == pytest.approx(report["drift"])
    assert 'lvad_streams{drifting="true",model="default"} 1.0' in metrics
    changes = metrics.split('lvad_stream_regime_changes_total{model="default"} ')[1].split()[0]
    assert float(changes) == report["regime_changes"]


def test_a_new_active_version_starts_its_streams_afresh(tmp_path, model_file, synthetic):
    settings = make_settings(tmp_path)
    seeded_store(settings.store, model_file)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        first = client.post("/v1/score", json=chunk_body(synthetic.test, 0)).json()
        assert first["stream"]["points"] == CHUNK
    registry = Registry(settings.store)
    shutil.copy(model_file, settings.store / "incoming.lvad")
    version = registry.register_version("default", settings.store / "incoming.lvad", source="t")
    registry.set_active("default", version.version)
    registry.close()
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        body = client.post("/v1/score", json=chunk_body(synthetic.test, 100)).json()
    assert body["model_version"] == 2 and body["stream"]["points"] == CHUNK


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"stride": 2}, "stride"),
        ({"stream": "bad\nname"}, "stream"),
        ({"stream": "x" * 201}, "stream"),
    ],
)
def test_stream_options_that_do_not_apply_are_refused(client, synthetic, extra, field):
    response = client.post("/v1/score", json={**chunk_body(synthetic.test, 0), **extra})
    assert response.status_code == 422
    assert field in response.text


def test_windows_take_no_stream(client, synthetic):
    windows = [synthetic.test[:16].tolist()]
    response = client.post("/v1/score", json={"windows": windows, "stream": "a"})
    assert response.status_code == 422 and "apply to `series` only" in response.text


def test_a_stream_keeps_the_way_it_was_scored(client, synthetic):
    assert client.post("/v1/score", json=chunk_body(synthetic.test, 0)).status_code == 200
    response = client.post("/v1/score", json=chunk_body(synthetic.test, 100, causal=True))
    assert response.status_code == 422
    assert response.json()["field"] == "causal" and "as a series" in response.json()["message"]


def test_streams_per_model_are_bounded(tmp_path, model_file, synthetic):
    settings = make_settings(tmp_path, max_streams=2)
    seeded_store(settings.store, model_file)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        for name in ("a", "b"):
            assert client.post("/v1/score", json=chunk_body(synthetic.test, 0, name)).is_success
        refused = client.post("/v1/score", json=chunk_body(synthetic.test, 0, "c"))
        again = client.post("/v1/score", json=chunk_body(synthetic.test, 100, "a"))
    assert refused.status_code == 422 and "LVAD_MAX_STREAMS" in refused.json()["message"]
    assert again.status_code == 200  # a known stream goes on
    registry = Registry(settings.store)
    with registry.engine.connect() as db:
        rows = db.execute(sa.select(t.stream_states.c.stream, t.stream_states.c.state)).all()
        sizes = [len(sa.types.JSON().bind_processor(db.dialect)(row.state)) for row in rows]
    registry.close()
    assert sorted(row.stream for row in rows) == ["a", "b"]
    assert max(sizes) < 64_000  # what LVAD_MAX_STREAMS bounds: bytes per stream on disk


def test_a_save_over_a_newer_state_is_a_conflict(store, detector):
    registry = Registry(store)
    states = StreamStates(registry.engine, max_streams=10)
    try:
        state = detector.stream_state()
        states.save("default", "s", 1, state, None)
        read = states.get("default", "s")
        states.save("default", "s", 1, state, read)  # the first writer wins
        with pytest.raises(ConflictError):
            states.save("default", "s", 1, state, read)  # the second read the same revision
        with pytest.raises(ConflictError):
            states.save("default", "s", 1, state, None)  # both thought it new
        assert states.get("default", "s").revision == 2
        with pytest.raises(LimitError):
            StreamStates(registry.engine, max_streams=1).save("default", "t", 1, state, None)
    finally:
        registry.close()
