"""The deployment files, checked without running them: hadolint, `docker compose config`,
promtool (config, rules and the rules' unit tests), and the Grafana provisioning.

That the dashboard and the rules use only metrics the service exports is checked
against a live /metrics: the container's in test_stack.py, a local server's (with a
real Prometheus running every query) in tests/app/test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docker.queries import DASHBOARD, ROOT, RULES, dashboard_queries, metric_names

COMPOSE = ROOT / "docker-compose.yml"
CI_OVERRIDE = ROOT / "docker" / "compose.ci.yml"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "docker" / "grafana"


def run(*command: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, env=environment, timeout=120
    )


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert path, f"{name} is not installed (make test-docker installs it)"
    return path


def compose_config(*files: Path, env: dict | None = None) -> dict:
    args = [a for f in files for a in ("-f", f)]
    result = run("docker", "compose", *args, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------- Dockerfile
def test_hadolint_finds_nothing():
    result = run(tool("hadolint"), "--no-color", ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_final_stage():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split()[0] for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    final = stages[-1]
    user = re.search(r"^USER (\S+)", final, flags=re.M)[1]
    assert user.split(":")[0] not in ("0", "root"), user
    assert re.search(r'^HEALTHCHECK .*\n?\s*CMD \["python", "[^"]+healthcheck.py"\]', final, re.M)
    assert "/readyz" in (ROOT / "docker" / "healthcheck.py").read_text()
    assert re.search(r"^VOLUME \[\"/data/store\"\]", final, flags=re.M)
    assert "ENV PATH=/opt/venv/bin" in final and "LVAD_STORE=/data/store" in final
    assert "apt-get" not in final and "pip install" not in final  # nothing built there
    assert "torch==2.13.0" in text and "ARG TORCH_INDEX_URL=" in text


# ---------------------------------------------------------------- compose
def test_compose_requires_an_api_key():
    env = {k: v for k, v in os.environ.items() if k != "LVAD_API_KEY"}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "LVAD_API_KEY" in result.stderr


def test_compose_stack():
    config = compose_config(COMPOSE, env={"LVAD_API_KEY": "k"})
    services = config["services"]
    assert set(services) == {"detector", "prometheus", "grafana", "node-exporter"}
    assert set(config["volumes"]) == {"lvad-store", "prometheus-data", "grafana-data"}
    detector = services["detector"]
    assert detector["environment"]["LVAD_STORE"] == "/data/store"
    assert detector["environment"]["LVAD_API_KEY"] == "k"
    assert detector["environment"].get("LVAD_BOOTSTRAP_PARAMS") is None  # unset: not passed
    passed = compose_config(COMPOSE, env={"LVAD_API_KEY": "k", "LVAD_BOOTSTRAP_PARAMS": "{}"})
    assert passed["services"]["detector"]["environment"]["LVAD_BOOTSTRAP_PARAMS"] == "{}"
    mounts = {v["target"]: v for s in services.values() for v in s.get("volumes", [])}
    assert mounts["/data/store"]["source"] == "lvad-store"
    assert mounts["/prometheus"]["source"] == "prometheus-data"
    assert mounts["/var/lib/grafana"]["source"] == "grafana-data"
    assert Path(mounts["/etc/prometheus"]["source"]) == PROMETHEUS_CONFIG.parent
    assert Path(mounts["/etc/grafana/provisioning"]["source"]) == GRAFANA / "provisioning"
    assert Path(mounts["/etc/grafana/dashboards"]["source"]) == GRAFANA / "dashboards"
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name  # exec form
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)  # loopback unless asked
    assert detector["healthcheck"]["start_period"] in ("10m0s", "10m")
    assert [p["published"] for p in detector["ports"]] == ["8000"]


def test_compose_ci_override():
    config = compose_config(COMPOSE, CI_OVERRIDE, env={"LVAD_API_KEY": "k"})
    services = config["services"]
    # grafana: a profile, not started
    assert set(services) == {"detector", "prometheus", "node-exporter"}
    for service in services.values():
        assert service["network_mode"] == "host" and not service.get("ports")
    assert services["detector"]["build"]["args"]["TORCH_INDEX_URL"] == ""
    assert services["detector"]["build"]["network"] == "host"
    assert "127.0.0.1" in services["detector"]["command"]
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert json.loads(services["detector"]["environment"]["LVAD_BOOTSTRAP_PARAMS"])["epochs"] <= 5


# ---------------------------------------------------------------- Prometheus
def test_promtool_check_config():
    result = run(tool("promtool"), "check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules():
    result = run(tool("promtool"), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests():
    result = run(tool("promtool"), "test", "rules", ROOT / "tests" / "docker" / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_compose_detector():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["lvad"]["static_configs"][0]["targets"] == ["detector:8000"]
    assert config["rule_files"] == ["rules.yml"]


def test_rules_cover_anomalies_and_service_health():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for name in ("LvadAnomalyDetected", "LvadAnomalyRateHigh", "LvadDetectorDown",
                 "LvadScoringLatencyHigh", "LvadTrainingJobFailed"):  # fmt: skip
        assert name in rules
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# ---------------------------------------------------------------- Grafana
def test_grafana_datasource_is_the_stack_prometheus():
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True


def test_grafana_dashboard_provider_points_at_the_mounted_dashboards():
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/lvad.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus" and target["expr"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == "prometheus"
    # what the issue asks the dashboard to show
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries()))
    assert {"lvad_last_max_score", "lvad_threshold"} <= used  # scores against the threshold
    assert {"lvad_anomalies_total", "lvad_points_scored_total"} <= used  # anomaly rate
    assert "lvad_variable_anomalies_total" in used  # top contributing variables
    assert {"http_requests_total", "http_request_duration_seconds_bucket"} <= used
    assert {"lvad_jobs", "lvad_model_info"} <= used  # jobs, the active model version
    # the default home dashboard is this file
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"/etc/grafana/dashboards/{DASHBOARD.name}"


@pytest.mark.parametrize("path", sorted(GRAFANA.rglob("*.y*ml")), ids=lambda p: p.name)
def test_grafana_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)
