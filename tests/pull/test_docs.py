"""docs/pull.md stays true to the code: every key of the file and every metric."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from app.pull.detectors_file import DetectorSpec, PrometheusSource, TLSConfig
from app.pull.exporter import ROUND_ERRORS, TRAINING_OUTCOMES, PullMetrics
from app.pull.frames import SKIP_REASONS
from app.pull.reader import ERROR_REASONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "pull.md").read_text()


def test_every_key_of_the_file_is_documented():
    keys = [f"`{name}`" for name in DetectorSpec.model_fields]
    keys += [f"`{name}`" for name in PrometheusSource.model_fields if name != "tls"]
    keys += [
        f"`tls.{name}`" for name in TLSConfig.model_fields if name not in ("cert_file", "key_file")
    ]
    keys += ["`tls.cert_file`, `tls.key_file`"]
    missing = [key for key in keys if f"| {key} |" not in DOC]
    assert not missing


def test_every_metric_and_reason_is_documented():
    registry = CollectorRegistry()
    PullMetrics(registry).add_detector("m")
    for family in registry.collect():
        assert f"`{family.name}" in DOC, family.name
    for reason in (*ERROR_REASONS, *ROUND_ERRORS, *SKIP_REASONS, *TRAINING_OUTCOMES):
        assert f"`{reason}`" in DOC, reason
