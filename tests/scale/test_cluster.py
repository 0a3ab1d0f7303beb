"""Two `lvad serve` replicas and two `lvad worker`s on one PostgreSQL and one Redis, all
real and on loopback: jobs through one replica, served by the other; activations
served by every replica within 2 s; a worker SIGKILLed mid-job, a replica SIGKILLed
under load, PostgreSQL restarted. The tests run in this order and share the cluster."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.app.conftest import data_dir  # noqa: F401  (a fixture)
from tests.app.live import (
    AUTH,
    TINY_PARAMS,
    LiveServer,
    score,
    submit_job,
    synthetic_windows,
    wait_for_job,
    wait_until,
)
from tests.conftest import FEATURES
from tests.scale.cluster import HEARTBEAT_TIMEOUT_S, LiveWorker, scale_env
from tests.scale.processes import alive, child_pids
from tests.scale.servers import PostgresServer, RedisServer

SLOW_PARAMS = {**TINY_PARAMS, "epochs": 200, "patience": 200}  # runs until stopped
WINDOWS = synthetic_windows(4)


@dataclass
class Cluster:
    postgres: PostgresServer
    redis: RedisServer
    root: Path
    env: dict[str, str]
    replicas: list[LiveServer] = field(default_factory=list)
    workers: list[LiveWorker] = field(default_factory=list)

    def add_replica(self) -> LiveServer:
        n = len(self.replicas) + 1
        replica = LiveServer.launch(self.root / f"store-{n}", self.root / f"replica-{n}.log",
                                    self.env)  # fmt: skip
        self.replicas.append(replica)
        return replica

    def add_worker(self) -> LiveWorker:
        n = len(self.workers) + 1
        worker = LiveWorker.launch(self.root / f"worker-store-{n}", self.root / f"worker-{n}.log",
                                   self.env)  # fmt: skip
        self.workers.append(worker)
        return worker

    def job_worker_pid(self, job_id: str) -> int:
        """The pool process running ``job_id`` (the job's row names it: host:pid)."""
        with psycopg.connect(self.postgres.dsn) as db:
            (worker,) = db.execute("SELECT worker FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return int(worker.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def cluster(postgres_server, redis_server, tmp_path_factory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    built = Cluster(postgres_server, redis_server, root, scale_env(postgres_server, redis_server))
    try:
        replicas = [built.add_replica(), built.add_replica()]
        workers = [built.add_worker(), built.add_worker()]
        for replica in replicas:
            replica.wait_live()
        for worker in workers:
            worker.wait_ready()
        yield built
    finally:
        with contextlib.ExitStack() as stack:
            for process in [*built.replicas, *built.workers]:
                stack.callback(process.stop)
        for log in sorted(root.glob("*.log")):
            print(f"--- {log.name} ---\n" + "\n".join(log.read_text().splitlines()[-40:]))


def served_version(replica: LiveServer) -> int | None:
    response = score(httpx.Client(base_url=replica.base_url, timeout=30), WINDOWS, FEATURES)
    return response.json()["model_version"] if response.status_code == 200 else None


class Load(threading.Thread):
    """Scores on ``base_url`` one request after another until stopped; the statuses."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stopped = threading.Event()
        self.results: list[tuple[int | str, int | None]] = []  # (status, model version)

    def run(self) -> None:
        body = {"windows": WINDOWS.tolist(), "variables": FEATURES, "explain": "none"}
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stopped.is_set():
                try:
                    response = client.post("/v1/score", json=body)
                    version = response.json().get("model_version")
                    self.results.append((response.status_code, version))
                except httpx.HTTPError as exc:
                    self.results.append((type(exc).__name__, None))

    def stop(self) -> list[tuple[int | str, int | None]]:
        self.stopped.set()
        self.join(60)
        return self.results


def test_train_through_one_replica_and_score_through_the_other(cluster, data_dir):  # noqa: F811
    a, b = cluster.replicas
    with a.client() as client_a, b.client() as client_b:
        job = submit_job(client_a, TINY_PARAMS, upload=data_dir / "metrics.csv")
        done = wait_for_job(client_b, job["id"], lambda j: j["state"] == "succeeded", "success")
        assert done["attempts"] == 1 and done["promoted"] is True and done["model_version"] == 1
        assert [epoch["epoch"] for epoch in done["history"]] == [1, 2, 3]  # every epoch
        b.wait_ready(30)  # B serves what a worker trained and activated
        response = score(client_b, WINDOWS, FEATURES)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == 1
        a.wait_ready(30)
    # the upload reached the workers as rows: neither the replica that took it nor a
    # worker keeps a copy of it
    stores = ["store-1", "worker-store-1", "worker-store-2"]
    assert not any((cluster.root / store / "jobs" / job["id"]).exists() for store in stores)


def test_an_activation_on_one_replica_is_served_by_the_other_within_2_s(cluster, data_dir):  # noqa: F811
    a, b = cluster.replicas
    with a.client() as client_a, b.client() as client_b:
        job = submit_job(client_b, TINY_PARAMS, upload=data_dir / "metrics.csv")
        wait_for_job(client_a, job["id"], lambda j: j["state"] == "succeeded", "success")
        wait_until(lambda: served_version(a) == 2 and served_version(b) == 2, 10, "version 2")
        load = Load(a.base_url)
        load.start()
        time.sleep(1)
        began = time.monotonic()
        activated = client_b.post("/v1/models/default/versions/1/activate", headers=AUTH)
        assert activated.status_code == 200, activated.text
        assert served_version(b) == 1  # the replica that activated serves it at once
        wait_until(lambda: served_version(a) == 1, 2.0, "replica A to serve version 1")
        took = time.monotonic() - began
        time.sleep(0.5)
        results = load.stop()
    assert all(status == 200 for status, _ in results), results  # nothing failed in the swap
    versions = [version for _, version in results]
    assert versions[0] == 2 and versions[-1] == 1 and sorted(versions, reverse=True) == versions
    print(f"activation on B served by A after {took:.2f} s")


def test_a_worker_killed_mid_job_leaves_nothing_stuck(cluster, data_dir):  # noqa: F811
    a, b = cluster.replicas
    with a.client() as client_a:
        job = submit_job(client_a, SLOW_PARAMS, upload=data_dir / "metrics.csv")
        wait_for_job(client_a, job["id"], lambda j: len(j["history"]) >= 2, "2 epochs")
        pid = cluster.job_worker_pid(job["id"])
        (victim,) = [w for w in cluster.workers if w.process.poll() is None and w.runs(pid)]
        victim.kill()
        replacement = cluster.add_worker()
        # the heartbeat rule: lost after HEARTBEAT_TIMEOUT_S, queued again, run again
        retried = wait_for_job(
            client_a, job["id"], lambda j: j["attempts"] == 2 and j["state"] == "running",
            "the second attempt",
        )  # fmt: skip
        assert retried["history"] == [] or retried["history"][0]["epoch"] == 1  # started afresh
        assert cluster.job_worker_pid(job["id"]) != pid
        replacement.wait_ready()
        cancelled = client_a.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    with psycopg.connect(cluster.postgres.dsn) as db:
        running = db.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
    wait_until(lambda: cluster.job_worker_pid(job["id"]) not in _pool_pids(cluster), 30,
               "the cancelled job's process to end")  # fmt: skip
    assert running == 0
    assert HEARTBEAT_TIMEOUT_S < 10


def _pool_pids(cluster: Cluster) -> set[int]:
    """The live pool processes of the workers still running."""
    running = [worker for worker in cluster.workers if worker.process.poll() is None]
    return {pid for worker in running for pid in child_pids(worker.pid) if alive(pid)}


def test_replicas_and_workers_ride_out_a_postgres_restart(cluster, data_dir):  # noqa: F811
    a, b = cluster.replicas
    loads = [Load(a.base_url), Load(b.base_url)]
    for load in loads:
        load.start()
    time.sleep(1)
    cluster.postgres.restart()  # every connection of every replica and worker is cut
    time.sleep(1)
    with a.client() as client_a, b.client() as client_b:
        for client in (client_a, client_b):  # the pools reconnect on their own
            assert client.get("/v1/models").status_code == 200
        current = served_version(a)
        activated = client_a.post(
            f"/v1/models/default/versions/{3 - current}/activate", headers=AUTH
        )  # fmt: skip
        assert activated.status_code == 200, activated.text
        wait_until(lambda: served_version(b) == 3 - current, 2.0, "B to serve the activation")
        job = submit_job(client_b, TINY_PARAMS, upload=data_dir / "metrics.csv")
        done = wait_for_job(client_a, job["id"], lambda j: j["state"] == "succeeded", "success")
        assert done["attempts"] == 1
    results = [result for load in loads for result in load.stop()]
    assert all(status == 200 for status, _ in results), results  # scoring never needed it
    assert len(results) > 10


def test_a_replica_killed_under_load_leaves_the_other_serving(cluster, data_dir):  # noqa: F811
    a, b = cluster.replicas
    load = Load(b.base_url)
    load.start()
    time.sleep(1)
    a.kill_group()
    time.sleep(2)
    with b.client() as client_b:  # jobs go on through the replica left
        job = submit_job(client_b, TINY_PARAMS, upload=data_dir / "metrics.csv")
        done = wait_for_job(client_b, job["id"], lambda j: j["state"] == "succeeded", "success")
        wait_until(lambda: served_version(b) == done["model_version"], 2.0, "the new version")
    results = load.stop()
    assert results and all(status == 200 for status, _ in results), results
