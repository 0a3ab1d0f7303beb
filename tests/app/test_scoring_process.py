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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

import app.scoring.process as scoring_process
from app.errors import ScoringUnavailable
from app.main import create_app
from app.scoring.backends import LOCAL_ROWS
from app.scoring.process import ScoringProcess, SharedArrays
from model.data import prepare_array
from model.detector import Detector
from tests.app.conftest import AUTH, make_settings, seeded_store
from tests.conftest import FEATURES, TINY

SHM = Path(scoring_process.SHM_DIR)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's new parent may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def restarts_counted(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("lvad_scoring_process_restarts_total "):
            return float(line.split()[1])
    raise AssertionError("lvad_scoring_process_restarts_total is not exported")


def shared_blocks() -> set[str]:
    return {p.name for p in SHM.glob("psm_*")} if SHM.is_dir() else set()


def child_pid(process: ScoringProcess) -> int:
    """The scoring child's pid (asked of the child itself, which starts it if need be)."""
    return process._run(os.getpid)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_file):
    """(client, components) of one app whose model runs in a scoring child."""
    settings = make_settings(tmp_path_factory.mktemp("scoring"), scoring_process=True)
    seeded_store(settings.store, model_file)
    app = create_app(settings, registry=CollectorRegistry())
    with TestClient(app) as client:
        yield client, app.state.components


def test_the_child_is_a_separate_process(served):
    _, components = served
    assert components.process is not None
    assert child_pid(components.process) != os.getpid()


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
    client, components = served
    served_model = components.models.get("default")
    with pytest.raises(Exception, match="variables") as caught:
        components.process.score_series(served_model.path, synthetic.test[:40, :3])
    assert getattr(caught.value, "status_code", None) == 422  # FeatureMismatchError


def test_large_arrays_go_through_shared_memory_and_none_is_left(served, synthetic, monkeypatch):
    client, components = served
    put, take = SharedArrays.put.__func__, SharedArrays.take
    sent, received = [], []

    def recording_put(cls, arrays, prefix="lvad-"):
        packed = put(cls, arrays, prefix)
        sent.append(type(packed))
        return packed

    def recording_take(self):
        received.append(self.name)
        return take(self)

    monkeypatch.setattr(SharedArrays, "put", classmethod(recording_put))
    monkeypatch.setattr(SharedArrays, "take", recording_take)
    before = shared_blocks()
    windows = np.stack([synthetic.test[i : i + 16] for i in range(128)])  # 64 KiB
    assert windows.nbytes > scoring_process.INLINE_BYTES
    for _ in range(3):
        body = client.post("/v1/score", json={"windows": windows.tolist()}).json()
        assert len(body["windows"]) == 128
    assert sent == [SharedArrays] * 3  # the windows, in a block
    assert len(received) == 3  # the results, in a block from the child
    assert all(name.startswith(components.block_prefix) for name in received)  # the store's
    assert shared_blocks() <= before


def test_the_child_follows_model_swaps(served, synthetic, detector):
    """Versions 1, 2, 1: every answer equals the model of the version it names."""
    client, components = served
    other = Detector.fit(prepare_array(synthetic.train, FEATURES), TINY.replace(seed=7, epochs=2))
    path = other.save(components.registry.root / "incoming-other.lvad")
    version = components.registry.register_version("default", path, source="test").version
    windows = np.stack([synthetic.test[i : i + 16] for i in range(LOCAL_ROWS)])
    models = {1: detector, version: other}
    try:
        for active in (version, 1, version):
            activate = f"/v1/models/default/versions/{active}/activate"
            assert client.post(activate, headers=AUTH).status_code == 200
            body = client.post("/v1/score", json={"windows": windows.tolist()}).json()
            assert body["model_version"] == active
            expected = models[active].score_windows(windows).score
            np.testing.assert_allclose([w["score"] for w in body["windows"]], expected, rtol=1e-12)
    finally:
        activate = "/v1/models/default/versions/1/activate"
        assert client.post(activate, headers=AUTH).status_code == 200


def test_a_child_killed_while_idle_is_replaced_for_the_next_request(served, synthetic):
    client, components = served
    scoring = components.process
    restarts = scoring.restarts
    os.kill(child_pid(scoring), signal.SIGKILL)
    time.sleep(0.5)
    windows = [synthetic.test[i : i + 16].tolist() for i in range(LOCAL_ROWS)]
    counted = restarts_counted(client)
    response = client.post("/v1/score", json={"windows": windows})
    assert response.status_code == 200, response.text
    assert scoring.restarts == restarts + 1
    assert restarts_counted(client) == counted + 1


def test_a_child_killed_during_a_call_fails_that_call_with_503(served, synthetic):
    client, components = served
    scoring = components.process
    child = child_pid(scoring)
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(scoring._run, time.sleep, 30)  # a call that is still running
        time.sleep(1.0)
        os.kill(child, signal.SIGKILL)
        with pytest.raises(ScoringUnavailable, match="stopped during this request"):
            call.result(timeout=20)
    assert ScoringUnavailable.status_code == 503
    windows = [synthetic.test[i : i + 16].tolist() for i in range(LOCAL_ROWS)]
    assert client.post("/v1/score", json={"windows": windows}).status_code == 200
    assert child_pid(scoring) != child


def test_small_calls_stay_in_the_server_process(served, synthetic):
    """With the child stopped, calls under LOCAL_ROWS model windows still succeed."""
    client, components = served
    windows = [synthetic.test[i : i + 16].tolist() for i in range(LOCAL_ROWS)]
    components.process.close()
    try:
        assert client.post("/v1/score", json={"windows": windows[:1]}).status_code == 200
        assert client.post("/v1/score", json={"windows": windows[:-1]}).status_code == 200
        refused = client.post("/v1/score", json={"windows": windows})
        assert refused.status_code == 503 and refused.json()["error"] == "scoring_unavailable"
    finally:
        components.process.start()
    assert client.post("/v1/score", json={"windows": windows}).status_code == 200


def test_arrays_fall_back_to_the_pipe_without_shared_memory(monkeypatch, model_file, synthetic):
    monkeypatch.setattr(scoring_process, "SHM_DIR", "/nonexistent")
    large = np.ones((64, 128))  # 64 KiB: too large to go inline
    assert large.nbytes > scoring_process.INLINE_BYTES
    assert isinstance(SharedArrays.put({"x": large}), dict)  # no block: the arrays themselves
    process = ScoringProcess(torch_threads=1)
    process.start()
    try:
        scored, seconds = process.score_windows(model_file, synthetic.test[None, :16])
    finally:
        process.close()
    assert scored.score.shape == (1, 16) and seconds > 0


def test_an_orphaned_child_exits(model_file, tmp_path):
    """The server killed with SIGKILL cannot stop its child; the child notices and exits."""
    script = (
        "from app.scoring.process import ScoringProcess\n"
        "import os, sys, time\n"
        "if __name__ == '__main__':\n"
        "    p = ScoringProcess(1); p.start(); print(p._run(os.getpid), flush=True)\n"
        "    time.sleep(60)\n"
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
