"""The compose stack on a real Docker engine: build, start, score, scrape, train,
restart, roll back, tear down.

Runs under `make test-docker` (tests/docker/run.sh), which brings up the engine and
the stand-in base images. The stack is docker-compose.yml + docker/compose.ci.yml
(host networking on 127.0.0.1, detector on :8000, Prometheus on :9090, no Grafana)
as compose project `lvad-ci`, so an operator's `lvad` stack is never touched. The
timings (build, container start to ready, ...) go to var/test-docker/measurements.json.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from datetime import datetime

import httpx
import pytest
import yaml

from model.evaluation.demo import DEMO_FEATURES, make_demo
from tests.docker.queries import (
    PROMETHEUS_SERIES,
    PULL_SERIES,
    ROOT,
    RULES,
    PrometheusAPI,
    dashboard_queries,
    exported_names,
    metric_names,
)

PROJECT = "lvad-ci"
FILES = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker" / "compose.ci.yml")]
IMAGE = "lvad:ci"
API_KEY = "ci-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DETECTOR = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090"
START_TIMEOUT = 600  # seconds: a first start trains the (small) demo model
SCRAPE_TIMEOUT = 90  # seconds: scrape interval 10 s, rule evaluation 15 s
JOB_TIMEOUT = 300
JOB_PARAMS = {"epochs": 2, "hidden_size": 16, "mc_samples": 4}
MEASUREMENTS = ROOT / "var" / "test-docker" / "measurements.json"


def parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds -> POSIX seconds."""
    match = re.fullmatch(r"(\S+?T\d\d:\d\d:\d\d)(\.\d+)?Z", text.strip())
    assert match, text
    whole = datetime.fromisoformat(match[1] + "+00:00").timestamp()
    return whole + float(match[2] or 0)


class ReadyWatcher(threading.Thread):
    """Polls /readyz every 0.1 s; ``ready_at`` is the wall time of the first 200."""

    def __init__(self, timeout: float) -> None:
        super().__init__(daemon=True)
        self.deadline = time.monotonic() + timeout
        self.stopped = threading.Event()
        self.ready_at: float | None = None

    def run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                if httpx.get(DETECTOR + "/readyz", timeout=1.0).status_code == 200:
                    self.ready_at = time.time()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)


class Stack:
    def __init__(self) -> None:
        self.env = {**os.environ, "LVAD_API_KEY": API_KEY}
        self.measurements: dict[str, object] = {}

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = ["docker", "compose", "-p", PROJECT, *FILES, *args]
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=timeout
        )
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def docker(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stderr}"
        return result.stdout.strip()

    def up(self) -> dict[str, float]:
        """`up --wait`, timing container start -> /readyz 200 and the whole command."""
        watcher = ReadyWatcher(START_TIMEOUT)
        watcher.start()
        began = time.time()
        self.compose("up", "-d", "--wait", "--wait-timeout", str(START_TIMEOUT), timeout=700)
        waited = time.time() - began
        watcher.join(30)
        watcher.stopped.set()
        assert watcher.ready_at, "/readyz never answered 200"
        container = self.compose("ps", "-q", "detector").stdout.strip()
        started = parse_docker_time(self.docker("inspect", "-f", "{{.State.StartedAt}}", container))
        return {
            "container_start_to_ready_s": round(watcher.ready_at - started, 2),
            "up_wait_s": round(waited, 2),
        }

    def volumes(self) -> list[str]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return self.docker("volume", "ls", "-q", "--filter", label).split()

    def save_logs(self) -> None:
        result = subprocess.run(
            ["docker", "compose", "-p", PROJECT, *FILES, "logs", "--no-color", "--tail", "200"],
            capture_output=True, text=True, env=self.env, timeout=60,
        )  # fmt: skip
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        (MEASUREMENTS.parent / "compose.log").write_text(result.stdout + result.stderr)

    def record(self, **values) -> None:
        self.measurements.update(values)
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        MEASUREMENTS.write_text(json.dumps(self.measurements, indent=2) + "\n")


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack():
    stack = Stack()
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")  # leftovers
    for port in (8000, 9090):
        assert not port_in_use(port), f"127.0.0.1:{port} is taken; the stack needs it"
    began = time.monotonic()
    stack.compose("build", "detector", timeout=1800)
    stack.record(build_s=round(time.monotonic() - began, 1))
    try:
        stack.record(first_start=stack.up())
        yield stack
    finally:
        stack.save_logs()
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "30")


@pytest.fixture(scope="module")
def prometheus(stack) -> PrometheusAPI:
    return PrometheusAPI(PROMETHEUS)


@pytest.fixture(scope="module")
def demo():
    return make_demo(0)


def window(demo, anomalous: bool) -> list[list[float]]:
    values = demo.train[DEMO_FEATURES].to_numpy()[100:132].copy()  # (32, 6), normal
    if anomalous:
        values[20:23, DEMO_FEATURES.index("latency_ms")] += 500.0  # a latency spike
    return values.tolist()


def test_image_is_cpu_only_non_root_and_lean(stack):
    image = json.loads(stack.docker("image", "inspect", IMAGE))[0]
    assert image["Config"]["User"] == "10001:10001"
    assert image["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert "/data/store" in image["Config"]["Volumes"]
    probe = (
        "import importlib.util as u, shutil, torch, json; print(json.dumps({"
        "'cuda': torch.version.cuda, 'torch': torch.__version__,"
        "'tsb_ad': u.find_spec('TSB_AD') is not None,"
        "'compilers': [c for c in ('gcc', 'cc', 'g++', 'make') if shutil.which(c)],"
        "'nvidia': [m for m in ('nvidia', 'triton') if u.find_spec(m)]}))"
    )
    run = ["run", "--rm", "--network", "none", "--entrypoint"]
    found = json.loads(stack.docker(*run, "python", IMAGE, "-c", probe))
    assert found == {
        "cuda": None, "torch": "2.13.0+cpu", "tsb_ad": False, "compilers": [], "nvidia": []
    }  # fmt: skip
    venv_mb = stack.docker(*run, "du", IMAGE, "-sm", "/opt/venv").split()[0]
    base = json.loads(stack.docker("image", "inspect", "python:3.11-slim"))[0]
    stack.record(
        image_mb=round(image["Size"] / 1e6), base_image_mb=round(base["Size"] / 1e6),
        venv_mb=int(venv_mb),
    )  # fmt: skip
    assert image["Size"] - base["Size"] < 1.6e9  # torch CPU + the scientific stack, no more


def test_stack_is_healthy(stack):
    lines = stack.compose("ps", "--format", "json").stdout.splitlines()
    services = {s["Service"]: s for s in map(json.loads, filter(None, lines))}
    assert set(services) == {"detector", "prometheus", "node-exporter"}
    for name, service in services.items():
        healthy = service["Health"] == "healthy" or name == "node-exporter"  # no health check
        assert service["State"] == "running" and healthy, (name, service)


def test_detector_is_non_root_and_writes_only_its_store_and_tmp(stack):
    container = stack.compose("ps", "-q", "detector").stdout.strip()
    host = json.loads(stack.docker("inspect", container))[0]["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    probe = (
        "import json, os\n"
        "def writable(folder):\n"
        "    try:\n"
        "        open(os.path.join(folder, '.probe'), 'w').close()\n"
        "    except OSError:\n"
        "        return False\n"
        "    os.remove(os.path.join(folder, '.probe'))\n"
        "    return True\n"
        "print(json.dumps({'uid': os.getuid(), 'writable': [f for f in "
        "('/', '/srv/lvad', '/opt/venv', '/tmp', '/data/store') if writable(f)]}))"
    )
    found = json.loads(stack.compose("exec", "-T", "detector", "python", "-c", probe).stdout)
    assert found == {"uid": 10001, "writable": ["/tmp", "/data/store"]}


def test_score_answers(stack, demo):
    ready = httpx.get(DETECTOR + "/readyz", timeout=10).json()
    assert ready == {"status": "ready", "model_version": 1, "models": {"default": 1}}
    body = {"windows": [window(demo, False), window(demo, True)], "variables": DEMO_FEATURES}
    response = httpx.post(DETECTOR + "/v1/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    normal, spiked = response.json()["windows"]
    assert spiked["anomalies"] > 0 and spiked["anomalies"] > normal["anomalies"]
    assert httpx.post(DETECTOR + "/v1/score", json={}, timeout=10).status_code == 422


def test_prometheus_scrapes_the_detector(stack, prometheus):
    target = next(t for t in prometheus.targets() if t["labels"]["job"] == "lvad")
    assert target["labels"]["instance"] == "detector:8000"
    prometheus.wait_for('up{job="lvad"}', lambda v: v == [1.0], SCRAPE_TIMEOUT, "target up")
    prometheus.wait_for(
        'lvad_points_scored_total{job="lvad", model="default"}',
        lambda v: v and v[0] >= 64,
        SCRAPE_TIMEOUT,
    )
    assert prometheus.values('lvad_anomalies_total{job="lvad"}')[0] > 0
    assert prometheus.query('lvad_variable_anomalies_total{job="lvad"}')
    assert prometheus.values('lvad_model_info{job="lvad", version="1"}') == [1.0]
    assert prometheus.values('lvad_jobs{job="lvad", state="succeeded"}') == [1.0]

    def rules_evaluated() -> bool:
        rules = [r for g in prometheus.rules() for r in g["rules"]]
        return bool(rules) and all(r["health"] == "ok" for r in rules)

    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while not rules_evaluated():
        assert time.monotonic() < deadline, prometheus.rules()
        time.sleep(1)
    assert {g["name"] for g in prometheus.rules()} == {
        "lvad-anomalies",
        "lvad-service",
        "lvad-pull",
    }


def test_the_example_detector_reads_the_hosts_node_metrics(stack, prometheus):
    """Pull mode in the stack: Prometheus scrapes the node exporter, the detector reads
    it back (its model trains once 2,000 points exist: hours, so here it waits)."""
    example = yaml.safe_load((ROOT / "docker" / "detectors.example.yml").read_text())
    for expr in example["detectors"][0]["queries"].values():
        # a value at the latest 15 s step, as the check's range query reads it (a subquery
        # evaluates at multiples of its step): a rate needs two scrapes before that step
        prometheus.wait_for(f"count_over_time(({expr})[15s:15s])", lambda v: v == [1.0],
                            SCRAPE_TIMEOUT)  # fmt: skip

    def waiting_for_history() -> bool:
        text = httpx.get(DETECTOR + "/metrics", timeout=10).text
        return 'lvad_detector_trainings_total{model="node",outcome="too_little_data"}' in text

    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while not waiting_for_history():
        assert time.monotonic() < deadline, "no training attempt of the node detector"
        time.sleep(1)
    check = stack.compose("exec", "-T", "detector", "lvad", "detectors", "check",
                          "/etc/lvad/detectors.yml", timeout=120)  # fmt: skip
    assert "node: last 60 steps of 15s" in check.stdout, check.stdout
    assert "groups: 1 usable" in check.stdout, check.stdout


def test_dashboard_and_rules_use_only_metrics_the_container_exports(stack):
    exported = exported_names(httpx.get(DETECTOR + "/metrics", timeout=10).text)
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for expr in [q.expr for q in dashboard_queries()] + rules:
        unknown = metric_names(expr) - exported - PROMETHEUS_SERIES - PULL_SERIES
        assert not unknown, f"{expr!r}: not exported by the detector: {unknown}"


def wait_for_job(job_id: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job = httpx.get(f"{DETECTOR}/v1/jobs/{job_id}", timeout=10).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT} s")


def test_trained_model_survives_down_and_up_then_rolls_back(stack, prometheus, demo, tmp_path):
    # train a new version in the stack and promote it
    data = tmp_path / "train.csv"
    demo.train.to_csv(data, index=False)
    with data.open("rb") as upload:
        response = httpx.post(
            DETECTOR + "/v1/jobs", headers=AUTH, timeout=60,
            files={"file": ("train.csv", upload, "text/csv")},
            data={"params": json.dumps(JOB_PARAMS)},
        )  # fmt: skip
    assert response.status_code == 202, response.text
    began = time.monotonic()
    job = wait_for_job(response.json()["id"])
    stack.record(job_s=round(time.monotonic() - began, 1))
    assert job["state"] == "succeeded", job
    version = job["model_version"]
    assert version == 2
    activate = f"{DETECTOR}/v1/models/default/versions/{version}/activate"
    activated = httpx.post(activate, headers=AUTH, timeout=60)
    assert activated.status_code == 200, activated.text
    assert httpx.get(DETECTOR + "/readyz", timeout=10).json()["model_version"] == version
    scored_before = prometheus.wait_for(
        'lvad_points_scored_total{job="lvad", model="default"}',
        lambda v: v and v[0] >= 64,
        SCRAPE_TIMEOUT,
    )[0]

    # down (containers gone, volumes kept) and up again: a cold container start
    began = time.monotonic()
    stack.compose("down", "--timeout", "30", timeout=180)
    stack.record(down_s=round(time.monotonic() - began, 1))
    assert stack.compose("ps", "-a", "-q").stdout.strip() == ""
    assert len(stack.volumes()) == 2  # lvad-store, prometheus-data
    stack.record(restart=stack.up())

    # the model, its registry and the jobs came back
    assert httpx.get(DETECTOR + "/readyz", timeout=10).json()["model_version"] == version
    models = httpx.get(DETECTOR + "/v1/models/default", timeout=10).json()["versions"]
    assert sorted((m["version"], m["active"]) for m in models) == [(1, False), (2, True)]
    jobs = {j["id"]: j for j in httpx.get(DETECTOR + "/v1/jobs", timeout=10).json()}
    assert jobs[job["id"]]["state"] == "succeeded" and len(jobs) == 2  # bootstrap + ours
    # Prometheus's data came back: the new process has scored nothing, the TSDB remembers
    prometheus.wait_for(
        'lvad_model_info{job="lvad", model="default", version="2"}',
        lambda v: v == [1.0],
        SCRAPE_TIMEOUT,
    )
    points = 'lvad_points_scored_total{job="lvad", model="default"}'
    # the old process's last sample (Prometheus restarted too, so no staleness marker)
    # answers until the first scrape of the new one: wait for that scrape's 0
    prometheus.wait_for(points, lambda v: v == [0.0], SCRAPE_TIMEOUT)
    remembered = prometheus.values(f"max_over_time({points}[1h])")
    assert remembered == [scored_before]

    # roll back to version 1
    rollback = DETECTOR + "/v1/models/default/versions/1/activate"
    rolled = httpx.post(rollback, headers=AUTH, timeout=60)
    assert rolled.status_code == 200, rolled.text
    assert httpx.get(DETECTOR + "/readyz", timeout=10).json()["model_version"] == 1
    body = {"windows": [window(demo, False)], "variables": DEMO_FEATURES}
    scored = httpx.post(DETECTOR + "/v1/score", json=body, timeout=60).json()
    assert scored["model_version"] == 1


def test_down_v_removes_everything(stack):
    began = time.monotonic()
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=180)
    stack.record(down_v_s=round(time.monotonic() - began, 1))
    assert stack.compose("ps", "-a", "-q").stdout.strip() == ""
    assert stack.volumes() == []
    for port in (8000, 9090):
        assert not port_in_use(port)
