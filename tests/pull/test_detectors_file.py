"""The detectors file: the issue's example loads, and every invalid key is refused with
its path named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.pull.detectors_file import DetectorsFileError, load_detectors_file, parse_detectors
from app.pull.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = """
prometheus:
  url: http://127.0.0.1:9090
detectors:
  - model: node
    queries:
      cpu: sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[1m]))
      load1: node_load1
      mem_used: node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes
    group_by: [instance]
    step: 15s
    infer_every: 15s
    fit_every: 24h
    fit_window: 7d
    min_train_points: 2000
"""


def with_changes(changes: dict, detector: dict | None = None) -> str:
    """The example with top-level ``changes`` and ``detector`` keys set (None: removed)."""
    data = yaml.safe_load(EXAMPLE)
    for target, edits in ((data, changes), (data["detectors"][0], detector or {})):
        for key, value in edits.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return yaml.safe_dump(data)


def refusal(text: str) -> DetectorsFileError:
    with pytest.raises(DetectorsFileError) as refused:
        parse_detectors(text)
    return refused.value


def test_the_issue_example_loads_with_its_values():
    detectors = parse_detectors(EXAMPLE)
    spec = detectors.detectors[0]
    assert detectors.prometheus.url == "http://127.0.0.1:9090"
    assert spec.variables == ["cpu", "load1", "mem_used"]
    assert (spec.step, spec.infer_interval, spec.fit_every, spec.fit_window) == (
        15.0, 15.0, 86400.0, 604800.0)  # fmt: skip
    assert spec.min_train_points == 2000 and spec.model_params == {}


def test_shipped_example_file_is_valid():
    detectors = load_detectors_file(ROOT / "docker" / "detectors.example.yml")
    assert [d.model for d in detectors.detectors]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("1m30s", 90), ("24h", 86400), ("7d", 604800), ("500ms", 0.5), ("1w", 604800)],
)
def test_prometheus_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["15", "1.5s", "1s1m", "0s", "", "-1s", "15 s", "1y2y"])
def test_not_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("detector", "path"),
    [
        ({"model": "Node"}, "detectors[0].model"),
        ({"model": "a" * 64}, "detectors[0].model"),
        ({"model": None}, "detectors[0].model"),
        ({"queries": {}}, "detectors[0].queries"),
        ({"queries": {"bad alias": "up"}}, "detectors[0].queries"),
        ({"queries": {"cpu": " "}}, "detectors[0].queries"),
        ({"queries": "up"}, "detectors[0].queries"),
        ({"group_by": ["in-stance"]}, "detectors[0].group_by"),
        ({"group_by": ["__name__"]}, "detectors[0].group_by"),
        ({"group_by": ["instance", "instance"]}, "detectors[0].group_by"),
        ({"step": "15"}, "detectors[0].step"),
        ({"step": 15}, "detectors[0].step"),
        ({"infer_every": "5s"}, "detectors[0].infer_every"),
        ({"fit_every": "often"}, "detectors[0].fit_every"),
        ({"fit_window": "1m"}, "detectors[0].fit_window"),
        ({"fit_retry": "0s"}, "detectors[0].fit_retry"),
        ({"min_train_points": 10}, "detectors[0].min_train_points"),
        ({"min_train_points": 50}, "detectors[0].min_train_points"),  # two windows of 32
        ({"min_train_points": "many"}, "detectors[0].min_train_points"),
        ({"max_missing": 1.0}, "detectors[0].max_missing"),
        ({"max_groups": 0}, "detectors[0].max_groups"),
        ({"params": {"windw": 16}}, "detectors[0].params.windw"),
        ({"params": {"window": 1.5}}, "detectors[0].params.window"),
        ({"params": {"epochs": True}}, "detectors[0].params.epochs"),
        ({"params": {"window": 4}}, "detectors[0].params"),
        ({"params": {"learning_rate": "fast"}}, "detectors[0].params.learning_rate"),
        ({"colour": "red"}, "detectors[0].colour"),
    ],
)
def test_invalid_detector_keys_are_named(detector, path):
    refused = refusal(with_changes({}, detector))
    assert refused.field == path
    assert path in refused.message


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"prometheus": None}, "prometheus"),
        ({"prometheus": {"url": "ftp://x"}}, "prometheus.url"),
        ({"prometheus": {"url": "http://"}}, "prometheus.url"),
        ({"prometheus": {"url": "http://x", "timeout": "soon"}}, "prometheus.timeout"),
        ({"prometheus": {"url": "http://x", "attempts": 0}}, "prometheus.attempts"),
        ({"prometheus": {"url": "http://x", "basic_auth": {"username": "a"}}},
         "prometheus.basic_auth"),
        ({"prometheus": {"url": "http://x", "basic_auth": {"username": "a", "password": "b"},
                         "bearer_token_file": "/t"}}, "prometheus"),
        ({"prometheus": {"url": "http://x", "tls": {"cert_file": "/c"}}}, "prometheus.tls"),
        ({"prometheus": {"url": "http://x", "tls": {"verify": False}}}, "prometheus.tls.verify"),
        ({"detectors": []}, "detectors"),
        ({"extra": 1}, "extra"),
    ],
)  # fmt: skip
def test_invalid_prometheus_keys_are_named(changes, path):
    refused = refusal(with_changes(changes))
    assert refused.field == path
    assert path in refused.message


def test_a_model_named_twice_is_refused_at_the_second():
    data = yaml.safe_load(EXAMPLE)
    data["detectors"].append(dict(data["detectors"][0]))
    refused = refusal(yaml.safe_dump(data))
    assert refused.field == "detectors[1].model"


def test_not_yaml_repeated_keys_and_not_a_mapping_are_refused(tmp_path):
    assert "not valid YAML" in refusal("detectors: [").message
    repeated = EXAMPLE.replace("load1: node_load1", "load1: node_load1\n      load1: up")
    assert "'load1' repeated" in refusal(repeated).message
    assert "expected a mapping" in refusal("- 1\n- 2").message
    with pytest.raises(DetectorsFileError, match="cannot read"):
        load_detectors_file(tmp_path / "absent.yml")
