"""A real Prometheus scrapes a real ``lvad serve``, both on loopback, without Docker.

Prometheus (Debian's package) runs with a temporary configuration: 1 s scrape and
rule-evaluation intervals, the stack's alerting rules (docker/prometheus/rules.yml).
The tests query its HTTP API for the domain metrics, the rules' health, an alert
fired by anomalous data, and every query of the Grafana dashboard. Without the
prometheus binary they skip, except in CI (CI=true), where they fail: .ci/run
installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pandas as pd
import pytest

from tests.app.conftest import API_KEY, seeded_store
from tests.app.live import HOST, LiveServer, free_port, wait_until
from tests.conftest import FEATURES, missing_component
from tests.docker.queries import (
    PROMETHEUS_SERIES,
    PULL_SERIES,
    RULES,
    PrometheusAPI,
    dashboard_queries,
    exported_names,
    metric_names,
)

SCRAPE_TIMEOUT = 30.0  # seconds, for anything that needs a scrape or an evaluation


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus is not installed (apt-get install prometheus; .ci/run does)"
        missing_component(message)
    return binary


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_file):
    root = tmp_path_factory.mktemp("scrape")
    seeded_store(root / "store", model_file)
    env = {"LVAD_API_KEY": API_KEY, "LVAD_BOOTSTRAP_DEMO": "false"}
    with LiveServer.serving(root / "store", root / "server.log", env) as live:
        yield live


@pytest.fixture(scope="module")
def prometheus(prometheus_binary, server, tmp_path_factory):
    root = tmp_path_factory.mktemp("prometheus")
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "lvad", "static_configs": [{"targets": [server.base_url[7:]]}]}
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    command = [
        prometheus_binary,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address={HOST}:{port}",
    ]
    with (root / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    api = PrometheusAPI(f"http://{HOST}:{port}")

    def ready() -> bool:
        assert process.poll() is None, (root / "prometheus.log").read_text()[-3000:]
        try:
            return httpx.get(f"{api.base_url}/-/ready", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, SCRAPE_TIMEOUT, "Prometheus ready")
        yield api
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def train_second_model(client, synthetic, tmp_path) -> None:
    """A tiny job for a second model, ``aux``: the job and loss metrics get their data."""
    data = tmp_path / "aux.csv"
    pd.DataFrame(synthetic.train[:400], columns=FEATURES).to_csv(data, index=False)
    params = {"window": 8, "hidden_size": 8, "latent_dim": 2, "epochs": 2, "mc_samples": 2}
    with data.open("rb") as handle:
        created = client.post(
            "/v1/jobs",
            files={"file": ("aux.csv", handle, "text/csv")},
            data={"params": json.dumps(params), "model": "aux"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded", 120, "aux job"
    )


@pytest.fixture(scope="module")
def scored(prometheus, server, synthetic, tmp_path_factory):
    """Once Prometheus has seen the idle detector, score normal and anomalous windows
    twice, a scrape apart (a variable's anomaly series starts with its first anomaly;
    the second batch makes it grow while Prometheus watches); then train a second
    model."""
    prometheus.wait_for('up{job="lvad"}', lambda v: v == [1.0], SCRAPE_TIMEOUT, "target up")
    prometheus.wait_for(
        'lvad_points_scored_total{model="default"}', lambda v: v == [0.0], SCRAPE_TIMEOUT
    )
    windows = [synthetic.test[i : i + 16].tolist() for i in (0, 195, 400, 410)]  # 3 anomalous
    anomalies = 0
    with server.client() as client:
        for batch in range(2):
            response = client.post("/v1/score", json={"windows": windows})
            assert response.status_code == 200, response.text
            anomalies += sum(w["anomalies"] for w in response.json()["windows"])
            if batch == 0:
                prometheus.wait_for(
                    "sum(lvad_variable_anomalies_total)",
                    lambda v, n=anomalies: v == [n],
                    SCRAPE_TIMEOUT,
                    "the first anomalies scraped",
                )
        train_second_model(client, synthetic, tmp_path_factory.mktemp("aux"))
        metrics = client.get("/metrics").text
    return {"points": 2 * 16 * len(windows), "anomalies": anomalies, "metrics": metrics}


def test_prometheus_scrapes_the_domain_metrics(prometheus, scored, detector):
    assert scored["anomalies"] > 0, "the injected spike and level shift must be flagged"
    points = prometheus.wait_for(
        'lvad_points_scored_total{job="lvad", model="default"}',
        lambda v: v == [scored["points"]],
        SCRAPE_TIMEOUT,
        "the scored points scraped",
    )
    assert points == [scored["points"]]
    anomalies = prometheus.values('lvad_anomalies_total{job="lvad", model="default"}')
    assert anomalies == [scored["anomalies"]]
    by_variable = prometheus.query("lvad_variable_anomalies_total")
    assert {item["metric"]["variable"] for item in by_variable} <= set(FEATURES)
    assert sum(float(item["value"][1]) for item in by_variable) == scored["anomalies"]
    served = prometheus.wait_for(
        "count(lvad_model_info)", lambda v: v == [2.0], SCRAPE_TIMEOUT, "both models served"
    )
    assert served == [2.0]
    versions = prometheus.query("lvad_model_info")
    assert {(s["metric"]["model"], s["metric"]["version"]) for s in versions} == {
        ("default", "1"), ("aux", "1")
    }  # fmt: skip
    threshold = prometheus.values('lvad_threshold{model="default"}')
    assert threshold == [pytest.approx(detector.threshold.value)]
    assert prometheus.values('lvad_score_margin_count{model="default"}') == [scored["points"]]
    assert prometheus.values('lvad_training_loss{model="aux"}')
    requests = prometheus.values('http_requests_total{handler="/v1/score", status="2xx"}')
    assert requests == [2.0]


def test_alert_rules_load_evaluate_and_fire_on_anomalies(prometheus, scored):
    def all_rules_healthy() -> bool:
        rules = [rule for group in prometheus.rules() for rule in group["rules"]]
        return bool(rules) and all(rule["health"] == "ok" for rule in rules)

    wait_until(all_rules_healthy, SCRAPE_TIMEOUT, "every rule evaluated without error")
    groups = {group["name"]: group for group in prometheus.rules()}
    assert set(groups) == {"lvad-anomalies", "lvad-service", "lvad-pull"}
    alerts = {rule["name"] for group in groups.values() for rule in group["rules"]}
    assert {"LvadAnomalyDetected", "LvadAnomalyRateHigh", "LvadDetectorDown",
            "LvadScoringLatencyHigh", "LvadTrainingJobFailed"} <= alerts  # fmt: skip
    firing = prometheus.wait_for(
        'ALERTS{alertname="LvadAnomalyDetected", alertstate="firing"}',
        lambda v: len(v) > 0,
        SCRAPE_TIMEOUT,
        "LvadAnomalyDetected firing after anomalous data",
    )
    labelled = prometheus.query('ALERTS{alertname="LvadAnomalyDetected"}')
    assert {item["metric"]["variable"] for item in labelled} <= set(FEATURES)
    assert firing
    # the service is healthy: none of its alerts is active
    health = prometheus.query('ALERTS{alertname=~"LvadDetectorDown|LvadNoModelServed"}')
    assert health == []


def test_dashboard_and_rules_use_only_exported_metrics(prometheus, scored):
    exported = exported_names(scored["metrics"]) | PROMETHEUS_SERIES | PULL_SERIES
    rule_queries = [r["query"] for g in prometheus.rules() for r in g["rules"]]
    for expr in [q.expr for q in dashboard_queries()] + rule_queries:
        unknown = metric_names(expr) - exported
        assert not unknown, f"{expr!r} uses metrics the service does not export: {unknown}"


def test_every_dashboard_query_runs_and_finds_data(prometheus, scored):
    # data for rates over the substituted 1 m interval: a few scrapes after scoring
    prometheus.wait_for(
        'count_over_time(lvad_points_scored_total{job="lvad", model="default"}[1m])',
        lambda v: v and v[0] >= 5,
        SCRAPE_TIMEOUT,
    )
    for query in dashboard_queries():
        result = prometheus.query(query.concrete)  # raises on a PromQL error
        pull_mode = metric_names(query.expr) & PULL_SERIES  # no detectors file here
        if "ALERTS" not in query.expr and not pull_mode:  # firing alerts may well be none
            assert result, f"panel {query.panel!r}: no data for {query.concrete}"
