"""Samples of a Prometheus text exposition, by series name."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def parse_samples(text: str) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    return parse_samples(response.text)


def values_by(samples: list[Sample], label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples}
