"""The scale profile's files, checked without running them: `docker compose config` of
the default stack (unchanged), of the scale profile with docker/compose.scale.yml and of
its test-only override; `haproxy -c` on the load balancer's configuration; hadolint on
the test-only images. The stack itself runs in test_scale_stack.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.docker.queries import ROOT
from tests.docker.test_static import tool

COMPOSE = ROOT / "docker-compose.yml"
SCALE = ROOT / "docker" / "compose.scale.yml"
CI = ROOT / "docker" / "compose.ci.yml"
SCALE_CI = ROOT / "docker" / "compose.scale-ci.yml"
HAPROXY = ROOT / "docker" / "haproxy"
TEST_IMAGES = ROOT / "docker" / "test-images"
ENV = {"LVAD_API_KEY": "k", "POSTGRES_PASSWORD": "pw"}
SCALE_SERVICES = {"postgres", "redis", "lb", "worker"}


def compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ENV} | (env or ENV)
    return subprocess.run(
        ["docker", "compose", *args], capture_output=True, text=True, env=environment, timeout=60
    )


def config(*files: Path, profile: str | None = None) -> dict:
    args = [a for f in files for a in ("-f", str(f))] + (["--profile", profile] if profile else [])
    result = compose(*args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_default_stack_has_no_scale_service_and_keeps_its_port():
    services = config(COMPOSE)["services"]
    assert set(services) == {"detector", "prometheus", "grafana", "node-exporter"}
    detector = services["detector"]
    assert not {"LVAD_REGISTRY_URL", "LVAD_BROKER_URL"} & set(detector["environment"])
    assert [(p["host_ip"], p["published"]) for p in detector["ports"]] == [("127.0.0.1", "8000")]
    assert [Path(v["source"]).name for v in detector["volumes"]] == [
        "lvad-store", "detectors.example.yml"
    ]  # fmt: skip


def test_scale_profile_puts_the_balancer_on_the_api_port():
    services = config(COMPOSE, SCALE, profile="scale")["services"]
    assert set(services) == {"detector", "prometheus", "grafana", "node-exporter"} | SCALE_SERVICES
    assert "ports" not in services["detector"]  # so that `--scale detector=N` can start
    lb = services["lb"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in lb["ports"]] == [
        ("127.0.0.1", "8000", 8000)
    ]
    assert lb["environment"]["LB_BIND"] == ":8000"
    for name in ("postgres", "redis", "worker"):
        assert not services[name].get("ports"), name  # reached on the compose network only


def test_detector_and_workers_share_the_registry_and_broker():
    services = config(COMPOSE, SCALE, profile="scale")["services"]
    detector, worker = services["detector"], services["worker"]
    for service in (detector, worker):
        environment = service["environment"]
        assert environment["LVAD_REGISTRY_URL"] == "postgresql+psycopg://lvad:pw@postgres:5432/lvad"
        assert environment["LVAD_BROKER_URL"] == "redis://redis:6379/0"
        healthy = {"condition": "service_healthy", "required": True}
        assert service["depends_on"] == {"postgres": healthy, "redis": healthy}
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["volumes"][0].get("source") is None  # its own scratch store
    assert len(worker["volumes"]) == 1
    (detectors,) = detector["volumes"][1:]  # pull mode's example, run by one replica
    assert detectors["source"].endswith("docker/detectors.example.yml") and detectors["read_only"]
    assert detector["environment"]["LVAD_DETECTORS"] == detectors["target"]
    assert worker["command"] == ["worker"] and worker["image"] == detector["image"]
    assert worker["build"] == detector["build"]
    # the image's check asks /readyz; a worker is healthy once it consumes jobs
    assert worker["healthcheck"]["test"] == ["CMD", "test", "-f", "/data/store/worker.ready"]
    assert worker["environment"]["LVAD_STORE"] == "/data/store"
    assert worker["environment"]["LVAD_PROMOTION"] == "if_better"  # workers promote
    postgres = services["postgres"]
    assert postgres["environment"] == {
        "POSTGRES_USER": "lvad", "POSTGRES_DB": "lvad", "POSTGRES_PASSWORD": "pw"
    }  # fmt: skip
    assert "--maxmemory-policy" in services["redis"]["command"]  # Celery's keys never evicted
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


def test_scale_override_requires_a_postgres_password():
    files = ("-f", str(COMPOSE), "-f", str(SCALE))
    result = compose(*files, "config", "-q", env={"LVAD_API_KEY": "k"})
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


def test_scale_profile_without_its_override_cannot_start_silently():
    services = config(COMPOSE, profile="scale")["services"]
    published = [p["published"] for name in ("detector", "lb") for p in services[name]["ports"]]
    assert published == ["8000", "8000"]  # both claim the API port: `up` fails on the clash


def test_ci_override_runs_the_scale_profile_on_loopback():
    services = config(COMPOSE, SCALE, CI, SCALE_CI, profile="scale")["services"]
    production = config(COMPOSE, SCALE, profile="scale")["services"]
    for name in ("postgres", "redis", "lb", "detector", "detector-2", "worker"):
        service = services[name]
        assert service["network_mode"] == "host" and not service.get("ports"), name
    for name, tag in (("postgres", "15"), ("redis", "7"), ("lb", "2.6")):
        image = services[name]["image"]
        assert image.startswith("lvad-test/") and image.endswith(f":{tag}"), image
    redis = services["redis"]["command"]
    assert redis[: len(production["redis"]["command"])] == production["redis"]["command"]
    replicas = [services[name] for name in ("detector", "detector-2")]
    assert [r["environment"]["LVAD_PORT"] for r in replicas] == ["18101", "18102"]
    for replica in replicas:  # the same definition, apart from the port
        assert replica["read_only"] is True and replica["image"] == "lvad:ci"
        assert "127.0.0.1:15432" in replica["environment"]["LVAD_REGISTRY_URL"]
    listed = (ROOT / "tests" / "docker" / "haproxy-replicas.cfg").read_text()
    servers = re.findall(r"server \S+ (\S+)", listed)
    assert servers == ["127.0.0.1:18101", "127.0.0.1:18102"]


@pytest.mark.parametrize(
    "replicas", [HAPROXY / "replicas.cfg", ROOT / "tests" / "docker" / "haproxy-replicas.cfg"],
    ids=["dns", "ci"],
)  # fmt: skip
def test_haproxy_accepts_its_configuration(replicas):
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-e", "LB_BIND=:8000",
         "-e", "LB_METRICS_BIND=:8404", "-v", f"{HAPROXY}:/etc/lb:ro",
         "-v", f"{replicas}:/etc/lb-replicas/replicas.cfg:ro", "lvad-test/haproxy:2.6",
         "haproxy", "-c", "-f", "/etc/lb/haproxy.cfg", "-f", "/etc/lb-replicas/replicas.cfg"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_haproxy_checks_readiness_and_retries_only_what_is_safe():
    text = (HAPROXY / "haproxy.cfg").read_text()
    assert "http-check send meth GET uri /readyz" in text
    assert "http-check expect status 200" in text and "balance roundrobin" in text
    retry_on = re.search(r"^\s*retry-on (.+)$", text, re.M)[1].split()
    assert {"conn-failure", "empty-response"} <= set(retry_on)
    assert "response-timeout" not in retry_on  # a slow request is not sent twice
    assert re.search(r"http-request disable-l7-retry unless idempotent or read_only_post", text)
    safe = re.search(r"acl read_only_post path -m reg (.+)$", text, re.M)[1].split()
    for path in ("/v1/score", "/v1/sample", "/v1/models/cpu/score", "/v1/models/cpu/sample"):
        assert any(re.search(pattern, path) for pattern in safe), path
    for path in ("/v1/jobs", "/v1/models/1/activate", "/v1/models/cpu/versions/2/activate"):
        assert not any(re.search(pattern, path) for pattern in safe), path
    replicas = (HAPROXY / "replicas.cfg").read_text()
    assert re.search(r"server-template replica 1-\d+ detector:8000 resolvers docker", replicas)


@pytest.mark.parametrize("name", ["postgres", "redis", "haproxy", "node-exporter"])
def test_test_images_build_on_the_debian_stand_in(name):
    dockerfile = TEST_IMAGES / name / "Dockerfile"
    assert re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M) == ["standins/debian:bookworm"]
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_replica_in_the_scale_profile():
    prometheus = ROOT / "docker" / "prometheus"
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(prometheus / "prometheus-scale.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    command = config(COMPOSE, SCALE, profile="scale")["services"]["prometheus"]["command"]
    default = config(COMPOSE)["services"]["prometheus"]["command"]
    assert command == [c.replace("prometheus.yml", "prometheus-scale.yml") for c in default]
    scale, single = (yaml.safe_load((prometheus / name).read_text()) for name in
                     ("prometheus-scale.yml", "prometheus.yml"))  # fmt: skip
    jobs = {job["job_name"]: job for job in scale["scrape_configs"]}
    assert jobs["lvad"]["dns_sd_configs"] == [
        {"names": ["detector"], "type": "A", "port": 8000, "refresh_interval": "10s"}
    ]
    assert jobs["lb"]["static_configs"][0]["targets"] == ["lb:8404"]
    assert scale["rule_files"] == single["rule_files"] and scale["global"] == single["global"]
