"""The `scale` profile on a real Docker engine: PostgreSQL, Redis, HAProxy, two detector
replicas and a training worker, on the test-only images (docker/test-images) and host
networking (docker/compose.scale-ci.yml), as compose project `lvad-scale-ci`.

The replicas share the registry in PostgreSQL: one of them queues the demo model, the
worker trains it over Redis, both serve it. A job through the balancer is trained by
the worker, and an activation (and a roll-back) through the balancer is served by both
replicas within 2 s. HAProxy spreads requests over the replicas in turn (counted by
each replica's own /metrics), takes a stopped or SIGKILLed replica out without failing
a request, and takes it back once it is ready again. Timings go to
var/test-docker/scale-measurements.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import httpx
import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from model.evaluation.demo import DEMO_FEATURES, make_demo
from tests.docker.queries import ROOT
from tests.docker.test_stack import port_in_use

PROJECT = "lvad-scale-ci"
FILES = [
    arg
    for name in ("docker-compose.yml", "docker/compose.scale.yml", "docker/compose.ci.yml",
                 "docker/compose.scale-ci.yml")
    for arg in ("-f", str(ROOT / name))
]  # fmt: skip
SERVICES = ["postgres", "redis", "worker", "detector", "detector-2", "lb"]
LB = "http://127.0.0.1:18100"
LB_METRICS = "http://127.0.0.1:18104/metrics"
REPLICAS = {"detector": "http://127.0.0.1:18101", "detector-2": "http://127.0.0.1:18102"}
PORTS = (18100, 18101, 18102, 18104, 15432, 16379)
POSTGRES_PASSWORD = "ci-password"
START_TIMEOUT = 600  # seconds: the worker trains the (small) demo model first
API_KEY = "ci-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MEASUREMENTS = ROOT / "var" / "test-docker" / "scale-measurements.json"


class ScaleStack:
    def __init__(self) -> None:
        self.env = {**os.environ, "LVAD_API_KEY": API_KEY, "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
                    "LVAD_WORKERS": "1"}  # fmt: skip
        self.measurements: dict[str, object] = {}

    def compose(self, *args: str, timeout: float = 180) -> str:
        command = ["docker", "compose", "-p", PROJECT, *FILES, "--profile", "scale", *args]
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def services(self) -> dict[str, dict]:
        lines = self.compose("ps", "--all", "--format", "json").splitlines()
        return {s["Service"]: s for s in map(json.loads, filter(None, lines))}

    def environment(self, service: str) -> dict[str, str]:
        container = self.compose("ps", "-q", service).strip()
        inspected = subprocess.run(
            ["docker", "inspect", "-f", "{{json .Config.Env}}", container],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return dict(item.split("=", 1) for item in json.loads(inspected.stdout))

    def wait_healthy(self, service: str, timeout: float = 120) -> float:
        began = time.monotonic()
        while self.services().get(service, {}).get("Health") != "healthy":
            assert time.monotonic() - began < timeout, f"{service} not healthy: {self.services()}"
            time.sleep(0.5)
        return time.monotonic() - began

    def save_logs(self) -> None:
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        logs = subprocess.run(
            ["docker", "compose", "-p", PROJECT, *FILES, "--profile", "scale", "logs",
             "--no-color", "--tail", "3000"],
            capture_output=True, text=True, env=self.env, timeout=60,
        )  # fmt: skip
        (MEASUREMENTS.parent / "scale-compose.log").write_text(logs.stdout + logs.stderr)
        lb = subprocess.run(
            ["docker", "compose", "-p", PROJECT, *FILES, "--profile", "scale", "logs",
             "--no-color", "lb"],
            capture_output=True, text=True, env=self.env, timeout=60,
        )  # fmt: skip
        (MEASUREMENTS.parent / "scale-lb.log").write_text(lb.stdout + lb.stderr)

    def record(self, **values) -> None:
        self.measurements.update(values)
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        MEASUREMENTS.write_text(json.dumps(self.measurements, indent=2) + "\n")


@pytest.fixture(scope="module")
def stack():
    stack = ScaleStack()
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")  # leftovers
    for port in PORTS:
        assert not port_in_use(port), f"127.0.0.1:{port} is taken; the scale stack needs it"
    began = time.monotonic()
    stack.compose("build", "detector", timeout=1800)
    stack.record(build_s=round(time.monotonic() - began, 1))
    try:
        began = time.monotonic()
        stack.compose("up", "-d", "--wait", "--wait-timeout", str(START_TIMEOUT), *SERVICES,
                      timeout=START_TIMEOUT + 60)  # fmt: skip
        stack.record(up_wait_s=round(time.monotonic() - began, 1))
        wait_for_lb_states({"replica1": "UP", "replica2": "UP"})  # 2 checks after healthy
        stack.record(up_to_lb_ready_s=round(time.monotonic() - began, 1))
        yield stack
    finally:
        stack.save_logs()
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")


@pytest.fixture(scope="module")
def score_body() -> dict:
    values = make_demo(0).train[DEMO_FEATURES].to_numpy()[100:132]  # (32, 6), normal
    return {"windows": [values.tolist()], "variables": DEMO_FEATURES, "explain": "none"}


def scored_requests(base_url: str) -> float:
    """POST /v1/score answered 2xx by one replica, from its own /metrics."""
    wanted = {"handler": "/v1/score", "method": "POST", "status": "2xx"}
    text = httpx.get(base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and wanted.items() <= sample.labels.items():
                return sample.value
    return 0.0


def replica_counts() -> dict[str, float]:
    return {name: scored_requests(url) for name, url in REPLICAS.items()}


def lb_server_states() -> dict[str, str]:
    """HAProxy's view of each replica: UP, DOWN, ... (its Prometheus exporter)."""
    states = {}
    for family in text_string_to_metric_families(httpx.get(LB_METRICS, timeout=10).text):
        for sample in family.samples:
            if sample.name == "haproxy_server_status" and sample.value == 1:
                states[sample.labels["server"]] = sample.labels["state"]
    return states


def wait_for_lb_states(expected: dict[str, str], timeout: float = 30) -> float:
    """Seconds until HAProxy sees the replicas in the ``expected`` states."""
    began = time.monotonic()
    while (states := lb_server_states()) != expected:
        assert time.monotonic() - began < timeout, f"HAProxy sees {states}, not {expected}"
        time.sleep(0.2)
    return time.monotonic() - began


def test_scale_services_are_up_and_healthy(stack):
    services = stack.services()
    assert set(services) == set(SERVICES)
    for name, service in services.items():
        assert service["State"] == "running", (name, service)
        if name != "lb":  # the HAProxy image has no HTTP client; HAProxy checks the rest
            assert service["Health"] == "healthy", (name, service)
    assert lb_server_states() == {"replica1": "UP", "replica2": "UP"}


def test_replicas_are_given_urls_that_reach_postgres_and_redis(stack):
    for replica in REPLICAS:
        environment = stack.environment(replica)
        registry = environment["LVAD_REGISTRY_URL"]
        assert registry.startswith("postgresql+psycopg://lvad:")
        with psycopg.connect(registry.replace("+psycopg", "", 1), connect_timeout=10) as db:
            version, database = db.execute(
                "SELECT current_setting('server_version_num')::int, current_database()"
            ).fetchone()
        assert version // 10000 == 15 and database == "lvad"
        with redis.Redis.from_url(environment["LVAD_BROKER_URL"]) as broker:
            assert broker.ping() and broker.info("server")["tcp_port"] == 16379
            assert broker.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_postgres_refuses_a_wrong_password(stack):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect("postgresql://lvad:wrong@127.0.0.1:15432/lvad", connect_timeout=10)


def test_lb_sends_requests_to_each_replica_in_turn(stack, score_body):
    before = replica_counts()
    with httpx.Client(base_url=LB, timeout=60) as client:  # one keep-alive connection
        for _ in range(20):
            response = client.post("/v1/score", json=score_body)
            assert response.status_code == 200, response.text
    served = {name: count - before[name] for name, count in replica_counts().items()}
    assert served == {"detector": 10, "detector-2": 10}  # round-robin, request by request


class Load(threading.Thread):
    """Scores through the balancer, one request after another, until stopped."""

    def __init__(self, body: dict) -> None:
        super().__init__(daemon=True)
        self.body = body
        self.stopped = threading.Event()
        self.statuses: list[int | str] = []

    def run(self) -> None:
        with httpx.Client(base_url=LB, timeout=60) as client:
            while not self.stopped.is_set():
                try:
                    self.statuses.append(client.post("/v1/score", json=self.body).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> list[int | str]:
        self.stopped.set()
        self.join(60)
        return self.statuses


def fail_over_under_load(stack, score_body: dict, *compose_args: str) -> dict:
    """Take detector-2 away (``compose_args``) under load; everything goes to detector
    once HAProxy has seen detector-2 down. Returns the figures and the failed requests."""
    load = Load(score_body)
    load.start()
    time.sleep(2)
    stack.compose(*compose_args, "detector-2")
    marked_down_s = wait_for_lb_states({"replica1": "UP", "replica2": "DOWN"})
    before = scored_requests(REPLICAS["detector"])
    sent_before = len(load.statuses)  # after: what ends meanwhile is in both counts
    time.sleep(3)
    statuses = load.stop()
    after = scored_requests(REPLICAS["detector"])
    assert after - before >= len(statuses) - sent_before - 1  # all to the replica left
    assert all(status == 200 for status in statuses[sent_before + 1 :])
    failed = [status for status in statuses if status != 200]
    figures = {"requests": len(statuses), "failed": len(failed), "marked_down_s": marked_down_s}
    return {k: round(v, 1) for k, v in figures.items()}, failed


def restore_replica(stack, score_body: dict) -> dict:
    began = time.monotonic()
    stack.compose("start", "detector-2")
    stack.wait_healthy("detector-2", timeout=START_TIMEOUT)
    wait_for_lb_states({"replica1": "UP", "replica2": "UP"})
    back_s = time.monotonic() - began
    before = replica_counts()
    with httpx.Client(base_url=LB, timeout=60) as client:
        for _ in range(10):
            assert client.post("/v1/score", json=score_body).status_code == 200
    served = {name: count - before[name] for name, count in replica_counts().items()}
    assert served == {"detector": 5, "detector-2": 5}
    return {"back_in_rotation_s": round(back_s, 1)}


def test_lb_fails_over_when_a_replica_stops_and_takes_it_back(stack, score_body):
    stopped, failed = fail_over_under_load(stack, score_body, "stop", "--timeout", "30")
    assert not failed  # a stopping replica finishes what it has; the rest is retried
    stack.record(stop=stopped | restore_replica(stack, score_body))


def test_lb_fails_over_when_a_replica_is_sigkilled_under_load(stack, score_body):
    killed, failed = fail_over_under_load(stack, score_body, "kill", "--signal", "SIGKILL")
    # what a killed replica dropped is retried on the other; only a response it was
    # half-way through sending (headers already passed on) can be lost, one at most
    assert len(failed) <= 1 and all("RemoteProtocolError" in str(f) for f in failed), failed
    stack.record(sigkill=killed | {"failures": failed} | restore_replica(stack, score_body))


def test_lb_runs_read_only_without_root(stack):
    container = stack.compose("ps", "-q", "lb").strip()
    inspected = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True, timeout=60
    )
    info = json.loads(inspected.stdout)[0]
    assert info["HostConfig"]["ReadonlyRootfs"] is True and info["HostConfig"]["CapDrop"] == ["ALL"]
    uid = stack.compose("exec", "-T", "lb", "id", "-u").strip()
    assert uid != "0"


def served_versions(score_body: dict) -> dict[str, int | None]:
    """The version of `default` each replica scores with, asked directly."""
    versions = {}
    for name, url in REPLICAS.items():
        response = httpx.post(url + "/v1/score", json=score_body, timeout=30)
        versions[name] = response.json()["model_version"] if response.status_code == 200 else None
    return versions


def wait_for_versions(score_body: dict, version: int, timeout: float) -> float:
    """Seconds until both replicas score with ``version``."""
    began = time.monotonic()
    while set((served := served_versions(score_body)).values()) != {version}:
        assert time.monotonic() - began < timeout, f"replicas serve {served}, not {version}"
        time.sleep(0.1)
    return time.monotonic() - began


def test_replicas_share_one_demo_model_trained_by_the_worker(stack):
    jobs = httpx.get(LB + "/v1/jobs", timeout=30).json()
    assert [(job["source"], job["state"]) for job in jobs] == [("bootstrap:demo", "succeeded")]
    assert jobs[0]["attempts"] == 1  # one replica queued it, the worker ran it
    worker_log = stack.compose("logs", "--no-color", "worker")
    assert f"job {jobs[0]['id']} (model 'default'): attempt 1" in worker_log


def test_a_job_through_the_balancer_is_trained_and_served_by_every_replica(stack, score_body):
    data = make_demo(1).train[DEMO_FEATURES].iloc[:1500].to_csv(index=False).encode()
    params = json.dumps({"epochs": 2, "hidden_size": 16, "mc_samples": 4})
    with httpx.Client(base_url=LB, timeout=60) as client:
        created = client.post(
            "/v1/jobs", headers=AUTH,
            files={"file": ("metrics.csv", data, "text/csv"), "params": (None, params)},
        )  # fmt: skip
        assert created.status_code == 202, created.text
        job_id, began = created.json()["id"], time.monotonic()
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() - began < 300, job
            time.sleep(0.5)
        assert job["state"] == "succeeded" and job["model_version"] == 2, job
        trained_s = time.monotonic() - began
        timings = {}
        for step, version in enumerate((2, 1, 2)):  # activate, roll back, activate again
            activated = client.post(f"/v1/models/default/versions/{version}/activate", headers=AUTH)
            assert activated.status_code == 200, activated.text
            waited = wait_for_versions(score_body, version, 2.0)
            timings[f"{step}_v{version}_s"] = round(waited, 2)
    stack.record(job_trained_s=round(trained_s, 1), activation=timings)
