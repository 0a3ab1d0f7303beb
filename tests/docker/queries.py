"""PromQL of the deployment files: the Grafana dashboard's queries, the metric names a
query uses, the names a live ``/metrics`` exports, and a small Prometheus API client.

Shared by the docker tier (tests/docker) and the real-Prometheus test in
tests/app/test_prometheus_scrape.py; needs no YAML parser and no Docker.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "lvad.json"
RULES = ROOT / "docker" / "prometheus" / "rules.yml"
# series Prometheus makes itself, not the detector
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# series the detector exports only in pull mode, with a detectors file (their exposition
# is tested in tests/pull/test_exporter.py)
PULL_SERIES = {
    "lvad_anomaly_score", "lvad_anomaly", "lvad_expected", "lvad_observed",
    "lvad_detector_series", "lvad_detector_model_version",
    "lvad_detector_last_success_timestamp_seconds",
    "lvad_detector_latest_point_timestamp_seconds", "lvad_detector_errors_total",
    "lvad_detector_groups_skipped_total", "lvad_detector_points_scored_total",
    "lvad_detector_trainings_total", "lvad_detector_round_duration_seconds_bucket",
    "lvad_detector_round_duration_seconds_sum", "lvad_detector_round_duration_seconds_count",
}  # fmt: skip
# Grafana's variables, as the tests substitute them
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$instance": ".*",
    "$model": ".*",
}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "offset", "bool", "inf", "nan"}  # fmt: skip
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    expr: str  # as in the dashboard, with Grafana variables

    @property
    def concrete(self) -> str:
        """The query with Grafana's variables replaced, ready for Prometheus's API."""
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr


def dashboard_queries(path: Path = DASHBOARD) -> list[PanelQuery]:
    """Every PromQL query of every panel (rows included) and of the template variables."""
    dashboard = json.loads(path.read_text())
    queries = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        queries += [PanelQuery(panel["title"], t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            queries.append(PanelQuery(f"variable {variable['name']}", inner[1] if inner else query))
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(offset\s+-?\w*|@\s*[\w.()]+)", " ", text)  # modifiers
    text = _LABEL_LIST.sub(" ", text)  # by (...), on (...), ...
    names = set()
    for match in _NAME.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        if match[0].lower() not in _KEYWORDS:
            names.add(match[0])
    return names


def exported_names(metrics_text: str) -> set[str]:
    """Series names a Prometheus text exposition holds samples for."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(_NAME.match(line)[0])
    return names


class PrometheusAPI:
    """The few calls of Prometheus's HTTP API the tests make; every wait is bounded."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def get(self, path: str, **params) -> dict:
        response = httpx.get(self.base_url + path, params=params, timeout=10.0)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (or scalar as a one-element list)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str) -> list[float]:
        return [float(item["value"][1]) for item in self.query(expr)]

    def wait_for(self, expr: str, condition, timeout: float, what: str = "") -> list[float]:
        """Poll ``expr`` until ``condition(values)`` holds; AssertionError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            try:
                values = self.values(expr)
            except httpx.HTTPError:
                values = []
            if condition(values):
                return values
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s: {what or expr} (last: {values})")

    def rules(self) -> list[dict]:
        return self.get("/api/v1/rules")["groups"]

    def targets(self) -> list[dict]:
        return self.get("/api/v1/targets")["activeTargets"]
