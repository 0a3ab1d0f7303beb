"""The documentation stays true to the code."""

from __future__ import annotations

from pathlib import Path

from app.ops.metrics import ServiceMetrics
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`LVAD_{name.upper()}`" in readme, name


def test_every_domain_metric_is_documented():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ServiceMetrics(registry)
    documented = (ROOT / "docs" / "service.md").read_text()
    for family in registry.collect():
        assert f"`{family.name}" in documented, family.name


def test_openapi_has_examples_for_scoring(client):
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["ScoreRequest"]
    assert request.get("examples")
    assert "/v1/score" in schema["paths"] and "/v1/jobs" in schema["paths"]


def test_score_response_schema_has_the_alarm_score(client):
    from app.http.scores import ScoreResponse

    schema = client.get("/openapi.json").json()["components"]["schemas"]
    steps = schema["StepScores"]
    assert "alarm_score" in steps["properties"] and "alarm_score" in steps["required"]
    assert "threshold" in steps["properties"]["is_anomaly"]["description"]
    (example,) = schema["ScoreResponse"]["examples"]
    series = ScoreResponse.model_validate(example).series
    assert series is not None and series.alarm_score and series.score
    flags = [a > example["threshold"] for a in series.alarm_score]
    assert series.is_anomaly == flags
    assert all(a >= s for a, s in zip(series.alarm_score, series.score, strict=True))
    assert all(series.is_anomaly[e.start] and series.is_anomaly[e.end] for e in series.events)


def test_every_model_parameter_bound_is_in_the_service_reference():
    from model.config import BOUNDS, ModelConfig

    documented = (ROOT / "docs" / "service.md").read_text()
    defaults = ModelConfig()
    for name, bound in BOUNDS.items():
        assert f"| `{name}` | `{getattr(defaults, name)}` | {bound} |" in documented, name
    assert set(BOUNDS) == set(ModelConfig.__dataclass_fields__)  # every parameter has one
