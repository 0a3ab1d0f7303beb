"""Pull mode in the service: ``lvad serve --detectors FILE`` on an empty store trains the
detector's named model from Prometheus' history through its own job queue and promotion
gate, exports the scores and bands on its /metrics, and flags an injected anomaly;
``lvad detectors run --once`` scores with the same store while the service holds it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.app.live import AUTH, LVAD, LiveServer, wait_until
from tests.pull.exposition import scrape, values_by
from tests.pull.test_runner_live import DETECTORS, PARAMS

TRAINING_TIMEOUT = 180.0  # seconds: the job's child imports torch on a shared machine
ROUND_TIMEOUT = 60.0


def anomaly_flags(found: dict) -> dict[str, float]:
    return values_by(found.get("lvad_anomaly", []), "host")


@pytest.fixture(scope="module")
def detectors_file(prometheus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("service") / "detectors.yml"
    path.write_text(DETECTORS.format(url=prometheus.url, params=json.dumps(PARAMS)))
    return path


@pytest.fixture(scope="module")
def service(detectors_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("service-store")
    env = {
        "LVAD_API_KEY": "test-key",
        "LVAD_BOOTSTRAP_DEMO": "false",
        "LVAD_DETECTORS": str(detectors_file),
    }
    server = LiveServer.launch(root / "store", root / "server.log", env)
    try:
        server.wait_live()
        wait_until(lambda: server.status_of("/readyz") == 200, TRAINING_TIMEOUT, "the training")
        yield server
    finally:
        server.stop()
        print(server.log_tail(80))


def samples(server: LiveServer) -> dict:
    return scrape(server.base_url + "/metrics")


def wait_for(server: LiveServer, condition, what: str, timeout: float = ROUND_TIMEOUT) -> dict:
    found: dict = {}

    def check() -> bool:
        found.clear()
        found.update(samples(server))
        return condition(found)

    wait_until(check, timeout, what, interval=0.3)
    return found


def test_the_service_trains_the_detector_model_and_exports_its_scores(service):
    with service.client() as client:
        (model,) = client.get("/v1/models").json()
        assert (model["name"], model["active_version"]) == ("demo", 1)
        assert model["feature_names"] == ["load", "latency"]
        (job,) = client.get("/v1/jobs?model=demo").json()
        assert job["source"] == "pull:demo" and job["state"] == "succeeded" and job["promoted"]
    found = wait_for(service, lambda f: set(anomaly_flags(f)) == {"a", "b"}, "both groups")
    bands = {(s.labels["host"], s.labels["variable"], s.labels["bound"]): s.value
             for s in found["lvad_expected"]}  # fmt: skip
    for host in "ab":
        for variable in ("load", "latency"):
            low, mean, up = (bands[(host, variable, b)] for b in ("lower", "mean", "upper"))
            assert low < mean < up, (host, variable)
    # pull mode's points count in the model's own scoring metrics too
    points = values_by(found["lvad_points_scored_total"], "model")["demo"]
    assert points > 0
    success = found["lvad_detector_last_success_timestamp_seconds"][0].value
    assert time.time() - 60 < success <= time.time()


def test_the_service_flags_an_injected_anomaly(service, exporter):
    _, control = exporter
    wait_for(service, lambda f: anomaly_flags(f) == {"a": 0.0, "b": 0.0}, "no flag", 90.0)
    control.write_text(json.dumps({"a": {"demo_latency": 60.0}}))
    try:
        found = wait_for(service, lambda f: anomaly_flags(f).get("a") == 1.0, "the flag")
        scores = values_by(found["lvad_anomaly_score"], "host")
        assert scores["a"] > 1.0 > scores["b"]
    finally:
        control.write_text("{}")


def test_detectors_run_once_reads_the_store_the_service_holds(service, detectors_file):
    store = service.log_path.parent / "store"
    result = subprocess.run(
        [str(LVAD), "detectors", "run", str(detectors_file), "--once"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "LVAD_STORE": str(store)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "demo: scored, 2 groups scored" in result.stdout
    assert ": expected " in result.stdout


def test_an_invalid_detectors_file_is_refused_at_start_up(tmp_path):
    bad = tmp_path / "detectors.yml"
    bad.write_text("prometheus: {url: http://127.0.0.1:9}\ndetectors:\n  - model: Demo\n")
    result = subprocess.run(
        [str(LVAD), "serve", "--detectors", str(bad)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "LVAD_STORE": str(tmp_path / "store"), "LVAD_API_KEY": "k"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "detectors[0].model" in result.stderr


def test_the_detector_model_scores_through_the_api_as_any_model(service):
    with service.client() as client:
        body = {"windows": [[[10.0, 100.0]] * 16], "variables": ["load", "latency"]}
        response = client.post("/v1/models/demo/score", json=body, headers=AUTH)
        assert response.status_code == 200 and response.json()["model"] == "demo"
