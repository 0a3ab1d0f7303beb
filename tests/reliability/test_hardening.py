"""The hardening of issue 21 against a real ``lvad serve``: each defect, tried again.

One server (module scope) takes the hostile requests and uploads; the start-up cases
(blank keys, two servers on one store, a lost registry, stale shared memory) start
their own. Limits are tested by what they protect: the server's CPU time, its peak
memory (VmHWM, reset before each case) and what is left on its disk.
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.scoring.process import block_prefix
from tests.app.conftest import AUTH, seeded_store
from tests.app.live import (
    LONG_PARAMS,
    TINY_PARAMS,
    LiveServer,
    submit_job,
    synthetic_windows,
    wait_for_job,
    wait_until,
)
from tests.conftest import FEATURES
from tests.reliability.conftest import serve_store
from tests.reliability.hostile_bench import cpu_seconds, parquet_bomb, proc_status
from tests.reliability.test_faults import add_version

WINDOW = {"windows": synthetic_windows(1).tolist(), "variables": FEATURES, "explain": "none"}
JSON = {"content-type": "application/json"}
MAX_QUEUED = 2
TRAINING_VALUES = 2_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_file):
    root = tmp_path_factory.mktemp("hardening")
    seeded_store(root / "store", model_file)
    add_version(root / "store", model_file)  # version 2, not active
    with serve_store(
        root,
        LVAD_MAX_QUEUED_JOBS=str(MAX_QUEUED),
        LVAD_MAX_TRAINING_VALUES=str(TRAINING_VALUES),
        LVAD_LOG_LEVEL="warning",
        LVAD_JOB_RETENTION_HOURS="0",  # a finished job's data goes at once
    ) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    with server.client(timeout=300) as http:
        yield http


def peak_growth(server: LiveServer, request) -> tuple[httpx.Response, int]:
    """The response to ``request()`` and how far the server's peak memory rose above its
    resident memory before it (bytes)."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = proc_status(server.pid, "VmRSS")
    response = request()
    return response, proc_status(server.pid, "VmHWM") - before


def csv_upload(client: httpx.Client, name: str, content: bytes, params: dict | None = None):
    form = {"file": (name, content, "text/csv"), "params": (None, json.dumps(params or {}))}
    return client.post("/v1/jobs", files=form, headers=AUTH)


def jobs_folders(server: LiveServer) -> list[str]:
    return sorted(p.name for p in (server.log_path.parent / "store" / "jobs").iterdir())


# ---------------------------------------------------------------------- 2. stalls
def test_names_by_the_thousand_cost_little_and_the_probes_stay_answered(server, client):
    variables = {f"v{i}": [0.5] for i in range(32_000)}  # ~0.5 MB, no key needed
    hostile = json.dumps({"series": {"variables": variables}}).encode()
    done, probes = threading.Event(), []

    def probe() -> None:
        with server.client(timeout=60) as prober:
            while not done.is_set():
                probes.append(prober.get("/healthz").status_code)
                probes.append(prober.post("/v1/score", json=WINDOW).status_code)

    cpu = cpu_seconds(server.pid)
    with ThreadPoolExecutor(46) as pool:
        prober = pool.submit(probe)
        answers = list(
            pool.map(lambda _: client.post("/v1/score", content=hostile, headers=JSON), range(45))
        )
        done.set()
        prober.result()
    used = cpu_seconds(server.pid) - cpu
    assert {a.status_code for a in answers} == {422}
    assert {a.json()["error"] for a in answers} == {"feature_mismatch"}
    assert max(len(a.content) for a in answers) < 2000  # 8 names shown, not 32,000
    assert used < 20, f"{used:.1f} s of server CPU for 45 requests"  # was ~10 s each
    assert probes and set(probes) == {200}


# ---------------------------------------------------------------------- 4. memory
def test_a_series_over_the_point_limit_is_refused_before_it_is_parsed(server, client):
    points = 64 * 2**20 // len(b"0.5, ")
    body = json.dumps({"series": {"variables": {"alpha": [0.5] * points}}}).encode()
    response, growth = peak_growth(
        server, lambda: client.post("/v1/score", content=body, headers=JSON)
    )
    assert response.status_code == 422 and response.json()["error"] == "limit_exceeded"
    assert "LVAD_MAX_SERIES_POINTS" in response.json()["message"]
    assert growth < 3 * len(body), f"peak +{growth / 2**20:.0f} MiB for a 64 MiB body"


def test_a_long_series_within_the_limit_costs_a_small_multiple_of_its_body(server, client):
    points = 100_000  # x 4 variables, with nulls: the slow path of the conversion
    rng = np.random.default_rng(0)
    values = {n: rng.random(points).round(4).tolist() for n in FEATURES}
    values["alpha"][::97] = [None] * len(values["alpha"][::97])
    body = json.dumps({"series": {"variables": values}, "explain": "none"}).encode()
    response, growth = peak_growth(
        server, lambda: client.post("/v1/score", content=body, headers=JSON)
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["series"]["score"]) == points
    # the answer counts too: seven per-step arrays of 100,000 steps are ~4x the body
    assert growth < 20 * len(body), f"peak +{growth / 2**20:.0f} MiB, body {len(body) >> 20} MiB"


# ---------------------------------------------------------------------- 6. uploads
def test_a_parquet_bomb_is_refused_from_its_metadata(server, client):
    bomb = parquet_bomb()  # 25 million zeros, ~100 kB
    form = {"file": ("bomb.parquet", bomb, "application/octet-stream")}
    response, growth = peak_growth(
        server, lambda: client.post("/v1/jobs", files=form, headers=AUTH)
    )
    assert response.status_code == 422 and response.json()["error"] == "limit_exceeded"
    assert "25,000,000 rows" in response.json()["message"]
    assert growth < 32 * 2**20, f"server peak +{growth / 2**20:.0f} MiB"  # was +1.25 GB
    assert jobs_folders(server) == []


def test_a_file_over_the_value_limit_or_with_duplicate_names_is_refused(server, client):
    wide = pd.DataFrame(np.zeros((TRAINING_VALUES // 4 + 10, 4)), columns=FEATURES)
    refused = csv_upload(client, "big.csv", wide.to_csv(index=False).encode())
    assert refused.status_code == 422 and "LVAD_MAX_TRAINING_VALUES" in refused.text
    twice = b"alpha,beta,alpha,delta\n" + b"1,2,3,4\n" * 300
    duplicated = csv_upload(client, "twice.csv", twice)
    assert duplicated.status_code == 422, duplicated.text
    assert "duplicated column name(s): alpha" in duplicated.json()["message"]
    buffer = io.BytesIO()
    column = pa.array(np.zeros(300))
    pq.write_table(pa.Table.from_arrays([column, column], names=["a", "a"]), buffer)
    form = {"file": ("twice.parquet", buffer.getvalue(), "application/octet-stream")}
    assert "duplicated column" in client.post("/v1/jobs", files=form, headers=AUTH).text
    assert jobs_folders(server) == []


# ---------------------------------------------------------------------- 8. parameters
@pytest.mark.parametrize(
    "params",
    [
        {"hidden_size": 1_000_000_000},
        {"window": 100_000},
        {"latent_dim": 10**6},
        {"num_layers": 100},
        {"epochs": 10**7},
        {"batch_size": 10**6},
        {"mc_samples": 10**6},
        {"max_train_windows": 10**9},
        {"patience": 0},
        {"learning_rate": 1e9},
        {"batch_size": 4096, "window": 1024, "hidden_size": 1024},  # each allowed, not all
        {"regime_windows": 10**6},
        {"regime_windows": 100, "window": 1024},  # a stream would keep 102,400 points
        {"level_windows": 100, "window": 128},
    ],
)
def test_training_parameters_outside_their_bounds_are_422(server, client, params):
    data = pd.DataFrame(np.random.default_rng(0).random((300, 4)), columns=FEATURES)
    response = csv_upload(client, "ok.csv", data.to_csv(index=False).encode(), params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_data" and body["field"] in params
    assert "allowed" in body["message"] or "at most" in body["message"]
    assert client.get("/v1/jobs").json() == [] and jobs_folders(server) == []


# ---------------------------------------------------------------------- 7. the queue
def test_the_job_queue_is_bounded_and_paths_stay_out_of_job_errors(server, client):
    data_dir = server.log_path.parent / "data"
    rows = pd.DataFrame(np.random.default_rng(1).random((400, 4)), columns=FEATURES)
    rows.to_csv(data_dir / "gone.csv", index=False)
    csv = rows.to_csv(index=False).encode()
    running = submit_job(client, LONG_PARAMS, upload=_write(data_dir / "up.csv", csv))
    wait_for_job(client, running["id"], lambda j: j["state"] == "running", "running")
    doomed = submit_job(client, TINY_PARAMS, path="gone.csv")  # queued
    queued = submit_job(client, TINY_PARAMS, upload=data_dir / "up.csv")
    full = csv_upload(client, "more.csv", csv, TINY_PARAMS)
    assert full.status_code == 429 and full.json()["error"] == "too_many_jobs"
    assert int(full.headers["Retry-After"]) > 0
    assert len(jobs_folders(server)) == 2  # the refused upload was never written
    (data_dir / "gone.csv").unlink()  # the queued job's file disappears
    client.delete(f"/v1/jobs/{queued['id']}", headers=AUTH)
    client.delete(f"/v1/jobs/{running['id']}", headers=AUTH)

    def failed() -> bool:
        return client.get(f"/v1/jobs/{doomed['id']}").json()["state"] == "failed"

    wait_until(failed, 120, "the job on the removed file failed")
    error = client.get(f"/v1/jobs/{doomed['id']}").json()["error"]
    assert "gone.csv" in error and str(data_dir) not in error, error
    wait_until(lambda: jobs_folders(server) == [], 30, "finished jobs' data removed")
    assert len(client.get("/v1/jobs").json()) == 3  # their records and losses stay


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------- 11. paths
def test_a_damaged_version_is_described_without_server_paths(server, client):
    store = server.log_path.parent / "store"
    damaged = store / "models" / "default" / "v0002.lvad"
    original = damaged.read_bytes()
    try:
        damaged.write_bytes(original[:100])
        for response in (
            client.get("/v1/models/default/versions/2"),
            client.post("/v1/models/default/versions/2/activate", headers=AUTH),
        ):
            assert response.status_code == 422, response.text
            message = response.json()["message"]
            assert "models/default/v0002.lvad" in message, message
            assert str(store) not in message, message
    finally:
        damaged.write_bytes(original)


# ---------------------------------------------------------------------- 12. micro-batch queue
def test_the_micro_batch_queue_is_bounded(tmp_path, launch, store):
    server = launch(store, LVAD_BATCH_QUEUE_WINDOWS="2", LVAD_MAX_BATCH_WINDOWS="1")
    server.wait_ready()
    with ThreadPoolExecutor(48) as pool, server.client(timeout=60) as client:
        answers = list(pool.map(lambda _: client.post("/v1/score", json=WINDOW), range(240)))
    statuses = {a.status_code for a in answers}
    assert statuses <= {200, 503} and 200 in statuses, statuses
    busy = [a for a in answers if a.status_code == 503]
    assert busy, "no request found the queue full"
    assert all(a.json()["error"] == "overloaded" and a.headers["Retry-After"] for a in busy)
    assert "LVAD_BATCH_QUEUE_WINDOWS" in busy[0].json()["message"]


# ---------------------------------------------------------------------- 1. blank keys
@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_a_blank_api_key_is_refused_at_start_up(tmp_path, key):
    server = LiveServer.launch(tmp_path / "store", tmp_path / "server.log", {"LVAD_API_KEY": key})
    code = server.wait_exit(60)
    assert code == 2, server.log_tail()
    assert "LVAD_API_KEY" in server.log_tail() and "empty" in server.log_tail()
    assert not (tmp_path / "store").exists()  # refused before anything was opened


# ---------------------------------------------------------------------- 3, 5, 12. start-up
def test_one_server_per_store_and_a_lost_registry_is_rebuilt(launch, store, data_dir):
    first = launch(store, LVAD_DATA_DIR=str(data_dir), LVAD_MAX_CONCURRENT_JOBS="1")
    first.wait_ready()
    with first.client() as client:
        running = submit_job(client, LONG_PARAMS, path="metrics.csv")
        upload = submit_job(client, TINY_PARAMS, upload=data_dir / "metrics.csv")  # queued
        second = launch(store, LVAD_DATA_DIR=str(data_dir))
        assert second.wait_exit(60) == 2, second.log_tail()
        assert "in use by another lvad process" in second.log_tail()
        assert client.get("/readyz").status_code == 200
        assert client.get(f"/v1/jobs/{running['id']}").json()["state"] in ("queued", "running")
    first.kill_group()  # a killed server can leave shared memory behind
    stale = SharedMemory(name=block_prefix(store) + "0" * 16, create=True, size=4096)
    stale.close()
    for path in store.glob("registry.sqlite3*"):
        path.unlink()

    restarted = launch(store, LVAD_DATA_DIR=str(data_dir))
    restarted.wait_ready()
    with restarted.client() as client:
        models = client.get("/v1/models").json()
        assert [(m["name"], m["active_version"], m["feature_names"]) for m in models] == [
            ("default", 1, FEATURES)
        ]  # fmt: skip
        assert client.get("/readyz").json()["models"] == {"default": 1}
    assert (store / "models" / "default" / "v0001.lvad").is_file()
    assert (store / "lost+found" / f"jobs-{upload['id']}" / "data.csv").is_file()  # kept
    assert not (store / "jobs" / upload["id"]).exists()
    assert list(Path("/dev/shm").glob(block_prefix(store) + "*")) == []
    log = restarted.log_path.read_text()
    assert "registry.sqlite3 was missing" in log
    assert "registered again as model 'default' version 1" in log
    assert "moved to lost+found" in log and "shared-memory block" in log
