"""Scoring in a child process (LVAD_SCORING_PROCESS, on by default).

One app with a scoring child serves the whole module (each child takes seconds to
start): its answers must equal the model's own, for windows, long windows and series
with context; shared memory must not leak; a killed child fails only the calls in
flight and is replaced. The live-server tests (test_server_process.py) run with the
child too: model swaps under concurrent scoring, SIGTERM with requests in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

import app.scoring_process as scoring_process
from app.errors import ScoringUnavailable
from app.main import create_app
from app.scoring_process import ScoringProcess, SharedArrays
from app.serving import LOCAL_ROWS
from tests.app.conftest import make_settings, seeded_store
from tests.conftest import FEATURES

SHM = Path(scoring_process.SHM_DIR)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def shared_blocks() -> set[str]:
    return {p.name for p in SHM.glob("psm_*")} if SHM.is_dir() else set()


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_file):
    """(client, service) of one app whose model runs in a scoring child."""
    settings = make_settings(tmp_path_factory.mktemp("scoring"), scoring_process=True)
    seeded_store(settings.store, model_file)
    app = create_app(settings, registry=CollectorRegistry())
    with TestClient(app) as client:
        yield client, app.state.service


def test_the_child_is_a_separate_process(served):
    _, service = served
    assert service.scoring is not None
    assert service.scorer.process is service.scoring
    assert service.scoring.pid() != os.getpid()


def test_windows_scored_in_the_child_equal_the_model(served, synthetic, detector):
    client, _ = served
    windows = np.stack([synthetic.test[i : i + 16] for i in range(0, 400, 8)])  # (50, 16, 4)
    body = client.post("/v1/score", json={"windows": windows.tolist(), "explain": "all"}).json()
    expected = detector.score_windows(windows)
    got = body["windows"]
    np.testing.assert_allclose([w["score"] for w in got], expected.score, rtol=1e-12)
    np.testing.assert_allclose([w["kl"] for w in got], expected.kl, rtol=1e-12)
    np.testing.assert_array_equal([w["is_anomaly"] for w in got], expected.is_anomaly)
    top = [[t[0]["variable"] if t else None for t in w["top_variables"]] for w in got]
    names = np.asarray(FEATURES)[expected.top(1)[..., 0]]
    np.testing.assert_array_equal(np.where(expected.contributions.max(-1) > 0, names, None), top)


def test_long_windows_and_series_with_context_equal_the_model(served, synthetic, detector):
    client, _ = served
    long = synthetic.test[40:80]
    body = client.post("/v1/score", json={"windows": [long.tolist()]}).json()
    np.testing.assert_allclose(body["windows"][0]["score"], detector.score(long).score, rtol=1e-12)

    new, before = synthetic.test[100:140], synthetic.test[70:100]
    series = {"variables": {n: new[:, i].tolist() for i, n in enumerate(FEATURES)}}
    context = {"variables": {n: before[:, i].tolist() for i, n in enumerate(FEATURES)}}
    body = client.post("/v1/score", json={"series": series, "context": context}).json()
    expected = detector.score(new, context=before)
    np.testing.assert_allclose(body["series"]["score"], expected.score, rtol=1e-12)
    assert not any(body["series"]["warm_up"])


def test_model_errors_in_the_child_reach_the_caller(served, synthetic):
    client, service = served
    served_model = service.holder.require()
    with pytest.raises(Exception, match="variables") as caught:
        service.scoring.call(served_model.path, "score", synthetic.test[:40, :3])
    assert getattr(caught.value, "status_code", None) == 422  # FeatureMismatchError


def test_no_shared_memory_is_left_behind(served, synthetic):
    client, _ = served
    before = shared_blocks()
    windows = [synthetic.test[i : i + 16].tolist() for i in range(0, 64)]
    for _ in range(5):
        assert client.post("/v1/score", json={"windows": windows}).status_code == 200
    assert shared_blocks() <= before


def test_a_killed_child_fails_only_the_calls_in_flight_and_is_replaced(served, synthetic):
    client, service = served
    scoring = service.scoring
    restarts = scoring.restarts
    os.kill(scoring.pid(), signal.SIGKILL)
    time.sleep(0.5)
    windows = [synthetic.test[i : i + 16].tolist() for i in range(LOCAL_ROWS)]
    first = client.post("/v1/score", json={"windows": windows})
    assert first.status_code == 503
    assert first.json()["error"] == "scoring_unavailable"
    after = client.post("/v1/score", json={"windows": windows})
    assert after.status_code == 200, after.text
    assert scoring.restarts == restarts + 1


def test_small_calls_stay_in_the_server_process(served, synthetic, monkeypatch):
    client, service = served

    def unavailable(*args, **kwargs):
        raise ScoringUnavailable("the test stopped the scoring process")

    monkeypatch.setattr(service.scoring, "call", unavailable)
    windows = [synthetic.test[i : i + 16].tolist() for i in range(LOCAL_ROWS)]
    assert client.post("/v1/score", json={"windows": windows[:1]}).status_code == 200
    assert client.post("/v1/score", json={"windows": windows[:-1]}).status_code == 200
    assert client.post("/v1/score", json={"windows": windows}).status_code == 503


def test_arrays_fall_back_to_the_pipe_without_shared_memory(monkeypatch, model_file, synthetic):
    monkeypatch.setattr(scoring_process, "SHM_DIR", "/nonexistent")
    packed = SharedArrays.put({"x": np.ones((2, 3))})
    assert isinstance(packed, dict)  # no block: the arrays themselves
    process = ScoringProcess(torch_threads=1)
    process.start()
    try:
        scored, seconds = process.call(model_file, "score_windows", synthetic.test[None, :16])
    finally:
        process.close()
    assert scored.score.shape == (1, 16) and seconds > 0


def test_an_orphaned_child_exits(model_file, tmp_path):
    """The server killed with SIGKILL cannot stop its child; the child notices and exits."""
    script = (
        "from app.scoring_process import ScoringProcess\n"
        "import sys, time\n"
        "if __name__ == '__main__':\n"
        "    p = ScoringProcess(1); p.start(); print(p.pid(), flush=True); time.sleep(60)\n"
    )
    path = tmp_path / "parent.py"
    path.write_text(script)
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running(child):
            time.sleep(0.2)
        assert not running(child), "the orphaned scoring child still runs"
    finally:
        if parent.poll() is None:
            parent.kill()
