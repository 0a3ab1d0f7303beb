"""The real ``lvad serve`` process: bootstrap, restarts, model swaps, graceful shutdown.

Every test starts the server as a subprocess on a free port of 127.0.0.1 (see
:mod:`tests.app.live`) and talks to it over HTTP; the ``launch`` fixture stops
every server it started (SIGTERM, then SIGKILL to the process group), pass or fail.
Each start pays for importing torch, so the tests keep to few starts and tiny models.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from app.scoring.backends import LOCAL_ROWS
from model.detector import Detector
from tests.app.live import (
    AUTH,
    LONG_PARAMS,
    TINY_PARAMS,
    LiveServer,
    score,
    submit_job,
    synthetic_windows,
    wait_for_job,
    wait_until,
)
from tests.conftest import FEATURES

SCORERS = 8
SWAPS = 6  # activations, alternating 2, 1, 2, ...
SWAP_PAUSE = 0.5  # seconds between activations: the scorers run for 3 s or more
CHUNK = 1 << 16  # bytes per piece of a streamed request body
# uvicorn >= 0.29 re-raises the SIGTERM it handled once shutdown is complete, so a
# graceful stop ends "killed by SIGTERM" rather than with 0 (see the report)
GRACEFUL_EXIT_CODES = (0, -signal.SIGTERM)


# ---------------------------------------------------------------------- 1. bootstrap
def test_an_empty_store_serves_a_demo_model_once_the_bootstrap_job_is_done(
    launch: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = launch(
        tmp_path / "store",
        LVAD_BOOTSTRAP_DEMO="true",
        LVAD_BOOTSTRAP_PARAMS=json.dumps(TINY_PARAMS),
    )
    server.wait_live()
    with server.client() as client:
        not_ready = client.get("/readyz")  # the job's child is still importing torch
        assert not_ready.status_code == 503, not_ready.text
        assert not_ready.json()["error"] == "model_not_ready"
        early = client.post("/v1/score", json={"windows": [[[0.0] * 6] * 16]})
        assert early.status_code == 503, early.text
        assert client.get("/healthz").status_code == 200

        server.wait_for_status("/readyz", 200)
        ready = client.get("/readyz").json()
        assert ready == {"status": "ready", "model_version": 1, "models": {"default": 1}}

        models = client.get("/v1/models/default").json()["versions"]
        assert [(m["version"], m["active"], m["source"]) for m in models] == [
            (1, True, "bootstrap:demo")
        ]
        jobs = client.get("/v1/jobs").json()
        assert len(jobs) == 1
        job = jobs[0]
        assert (job["source"], job["state"], job["error"]) == ("bootstrap:demo", "succeeded", None)
        assert (job["model_version"], job["promoted"], job["progress"]) == (1, True, 1.0)
        assert job["params"] == TINY_PARAMS and models[0]["job_id"] == job["id"]
        assert [e["epoch"] for e in job["history"]] == [1, 2, 3]
        assert all(
            np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"]) for e in job["history"]
        )

        from model.evaluation.demo import make_demo

        variables = models[0]["feature_names"]
        window = make_demo().test[variables].to_numpy()[:16]  # (16, 6)
        response = score(client, window[None], variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_version"], body["window"], body["variables"]) == (1, 16, variables)
        assert len(body["windows"]) == 1 and len(body["windows"][0]["score"]) == 16


# ---------------------------------------------------------------------- 2. restart
def test_a_job_killed_with_the_server_is_failed_as_interrupted_after_a_restart(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path
) -> None:
    server = launch(store)
    server.wait_ready()
    with server.client() as client:
        models_before = client.get("/v1/models/default").json()["versions"]
        assert [(m["version"], m["active"]) for m in models_before] == [(1, True)]
        job = submit_job(client, LONG_PARAMS, upload=data_dir / "metrics.csv")
        assert (job["source"], job["params"]) == ("upload:metrics.csv", LONG_PARAMS)
        job_id = job["id"]
        seen = wait_for_job(
            client,
            job_id,
            lambda j: j["state"] == "running" and bool(j["history"]),
            "an epoch done",
        )

    server.kill_group()  # the service and its training child, without any warning
    assert server.process.returncode == -signal.SIGKILL

    restarted = launch(store)
    restarted.wait_ready()
    with restarted.client() as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "failed" and "interrupted" in job["error"], job
        assert job["finished"] is not None and job["model_version"] is None
        assert len(job["history"]) >= len(seen["history"]) >= 1
        assert job["history"][: len(seen["history"])] == seen["history"]
        assert client.get("/v1/models/default").json()["versions"] == models_before
        assert client.get("/readyz").json()["model_version"] == 1
    assert [p.name for p in (store / "models" / "default").iterdir()] == ["v0001.lvad"]
    assert sorted((store / "tmp").iterdir()) == []
    assert (store / "jobs" / job_id).is_dir()  # the failed job keeps its data


# ---------------------------------------------------------------------- 3. model swap
def test_activating_versions_while_clients_score_fails_no_request(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path
) -> None:
    server = launch(store, LVAD_DATA_DIR=str(data_dir), LVAD_PROMOTION="manual")
    server.wait_ready()
    with server.client() as client:
        job_id = submit_job(client, TINY_PARAMS, path="metrics.csv")["id"]
        done = wait_for_job(client, job_id, lambda j: j["state"] == "succeeded", "succeeded")
        assert (done["model_version"], done["promoted"]) == (2, False)
        listed = client.get("/v1/models/default").json()["versions"]
        models = {m["version"]: m for m in listed}
        assert (models[1]["active"], models[2]["active"]) == (True, False)
    thresholds = {version: m["threshold"] for version, m in models.items()}

    windows = synthetic_windows(64)  # (64, 16, 4)
    stop = threading.Event()
    tally: Counter[int] = Counter()  # responses per model version
    tally_lock = threading.Lock()

    def score_in_a_loop(worker: int) -> list[tuple[int, int | None, float | None]]:
        """(status, model_version, threshold) of every request; 1, 3 or LOCAL_ROWS windows
        in turn (the last are scored in the scoring process, the others in the server's)."""
        seen = []
        deadline = time.monotonic() + 90
        with server.client(timeout=30) as scorer:
            for i in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                count = (1, 3, LOCAL_ROWS)[(worker + i) % 3]
                start = (worker * 7 + i) % (len(windows) - count)
                response = score(scorer, windows[start : start + count], FEATURES)
                body = response.json() if response.status_code == 200 else {}
                seen.append(
                    (response.status_code, body.get("model_version"), body.get("threshold"))
                )
                if response.status_code == 200:
                    with tally_lock:
                        tally[body["model_version"]] += 1
        return seen

    def swap_versions() -> list[int]:
        """Activate 2, 1, 2, ...; after each, wait until some request was scored by it."""
        statuses = []
        with server.client(timeout=30) as admin:
            for i in range(SWAPS):
                version = 2 if i % 2 == 0 else 1
                scored_before = tally[version]
                path = f"/v1/models/default/versions/{version}/activate"
                response = admin.post(path, headers=AUTH)
                statuses.append(response.status_code)
                wait_until(lambda v=version, n=scored_before: tally[v] > n, 30, f"v{version} used")
                time.sleep(SWAP_PAUSE)  # scoring goes on against this version
        return statuses

    with ThreadPoolExecutor(SCORERS + 1) as pool:
        scorers = [pool.submit(score_in_a_loop, worker) for worker in range(SCORERS)]
        swapper = pool.submit(swap_versions)
        try:
            activations = swapper.result(timeout=120)
        finally:
            stop.set()
        results = [row for future in scorers for row in future.result(timeout=120)]

    assert activations == [200] * SWAPS
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: len(results)}, statuses
    assert {version for _, version, _ in results} == {1, 2}
    mixed = [(v, t) for _, v, t in results if t != thresholds[v]]
    assert not mixed, f"responses whose threshold is not their version's: {mixed[:5]}"
    with server.client() as client:
        assert client.get("/v1/models/default").json()["active_version"] == 1  # the last
        assert client.get("/readyz").json()["model_version"] == 1


# ---------------------------------------------------------------------- 4. shutdown
def test_sigterm_lets_requests_in_flight_finish_then_exits(
    launch: Callable[..., LiveServer], store: Path
) -> None:
    server = launch(store)
    server.wait_ready()
    # windows of the model's length, far more than LOCAL_ROWS: the scoring process
    # scores them, which the server stops only after the requests in flight
    requests, count = 3, 3000
    assert count >= LOCAL_ROWS
    windows = synthetic_windows(count)  # (3000, 16, 4)
    body = json.dumps({"windows": windows.tolist(), "variables": FEATURES, "explain": "none"})
    sent = [threading.Event() for _ in range(requests)]

    def chunks(done: threading.Event) -> Iterator[bytes]:
        data = body.encode()
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
        done.set()  # asked for more after the last chunk: the whole body is written

    def post(index: int) -> tuple[int, dict, float]:
        """(status, body, when it ended); a connection error fails the test."""
        with server.client(timeout=120) as client:
            response = client.post(
                "/v1/score",
                content=chunks(sent[index]),
                headers={"content-type": "application/json"},
            )
            return response.status_code, response.json(), time.monotonic()

    with ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(post, index) for index in range(requests)]
        for event in sent:
            assert event.wait(60), "a request body was not sent within 60 s"
        time.sleep(0.3)  # let the server read the bodies
        terminated = time.monotonic()
        server.signal(signal.SIGTERM)
        wait_until(lambda: server.process.poll() is not None or refuses(server), 10, "no new work")
        results = [future.result(timeout=180) for future in futures]
    code = server.wait_exit(60)

    assert [status for status, _, _ in results] == [200] * requests, [r[:2] for r in results]
    for _, answer, _ in results:
        assert answer["model_version"] == 1 and len(answer["windows"]) == count
        assert all(len(w["score"]) == windows.shape[1] for w in answer["windows"])
    assert any(ended > terminated for *_, ended in results), "nothing was in flight at SIGTERM"
    assert code in GRACEFUL_EXIT_CODES, f"exit code {code}\n{server.log_tail()}"
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-3000:]


# ---------------------------------------------------------------------- 5. micro-batching
def test_concurrent_single_windows_are_batched_and_each_gets_its_own_score(
    launch: Callable[..., LiveServer], store: Path, model_file: Path
) -> None:
    server = launch(store, LVAD_BATCH_WAIT_MS="100")  # time for the callers to meet
    server.wait_ready()
    callers = 16
    windows = synthetic_windows(callers * 25)[::25]  # (16, 16, 4): far apart in the data
    expected = Detector.load(model_file).score_windows(windows).score  # (16, 16)
    start = threading.Barrier(callers)

    def score_one(index: int) -> list[float]:
        with server.client(timeout=60) as client:
            start.wait()
            response = score(client, windows[index : index + 1], FEATURES)
            assert response.status_code == 200, response.text
            return response.json()["windows"][0]["score"]

    with ThreadPoolExecutor(callers) as pool:
        answers = np.array(list(pool.map(score_one, range(callers))))  # (16, 16)
    for index in range(callers):  # each caller got its own window's score, no other's
        distances = np.abs(expected - answers[index]).max(axis=1)  # (16,)
        assert int(distances.argmin()) == index and distances[index] < 1e-4, distances
    with server.client() as client:
        batches = histogram(client.get("/metrics").text, "lvad_batch_windows")
    assert batches["count"] >= 1 and batches["le_1"] < batches["count"], batches


def histogram(metrics: str, name: str) -> dict[str, float]:
    """The count of a histogram and its bucket le="1"."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == f"{name}_count":
                found["count"] = sample.value
            if sample.name == f"{name}_bucket" and sample.labels.get("le") == "1.0":
                found["le_1"] = sample.value
    return found


def refuses(server: LiveServer) -> bool:
    """True once the server no longer accepts connections."""
    try:
        httpx.get(server.base_url + "/healthz", timeout=2.0)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False
