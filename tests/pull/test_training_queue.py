"""Training: two detectors that need a model share a job queue of one (the second backs
off while it is full), and a detector without enough history waits and tries again."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from app.pull.detectors_file import parse_detectors
from app.pull.exporter import PullMetrics
from app.pull.runner import DetectorRunner, retry_delay
from tests.app.live import wait_until
from tests.pull.model_host import InProcessHost

PARAMS = {"window": 16, "hidden_size": 8, "latent_dim": 2, "epochs": 2, "seed": 2}
DETECTOR = """
  - model: {model}
    queries: {{load: 'demo_load{{host="{host}"}}', latency: 'demo_latency{{host="{host}"}}'}}
    step: 1s
    fit_window: 10m
    fit_retry: {retry}
    min_train_points: {points}
    params: {params}
"""


def detectors_file(url: str, *detectors: dict) -> str:
    listed = "".join(DETECTOR.format(params=json.dumps(PARAMS), **d) for d in detectors)
    return f"prometheus: {{url: '{url}'}}\ndetectors:{listed}"


def test_two_detectors_take_turns_in_a_queue_of_one(prometheus):
    text = detectors_file(
        prometheus.url,
        {"model": "first", "host": "a", "retry": "1s", "points": 500},
        {"model": "second", "host": "b", "retry": "1s", "points": 500},
    )
    host = InProcessHost(max_jobs=1)
    registry = CollectorRegistry()
    metrics = PullMetrics(registry)
    runner = DetectorRunner(parse_detectors(text), host, metrics)
    busiest = []

    def both_trained() -> bool:
        busiest.append(sum(not job.done() for job in host.jobs.values()))
        return host.variables("first") is not None and host.variables("second") is not None

    runner.start()
    try:
        wait_until(both_trained, 120.0, "both detectors trained")
    finally:
        runner.stop()
        host.close()
    assert max(busiest) == 1, "never two trainings at once"
    assert sorted(model for model, *_ in host.trained) == ["first", "second"]
    refused = sum(
        registry.get_sample_value(
            "lvad_detector_trainings_total", {"model": m, "outcome": "queue_full"}
        )
        for m in ("first", "second")
    )
    assert refused >= 1, "the second found the queue full and came back later"


def test_too_little_history_waits_with_a_growing_delay(prometheus):
    text = detectors_file(prometheus.url, {"model": "big", "host": "a", "retry": "1m",
                                           "points": 100_000})  # fmt: skip
    host = InProcessHost()
    runner = DetectorRunner(parse_detectors(text), host, PullMetrics(CollectorRegistry()))
    try:
        result = runner.train_detector("big")
    finally:
        runner.reader.close()
        host.close()
    assert result.outcome == "too_little_data" and result.retry
    assert 500 <= result.points <= 601  # 10 minutes of one host at 1 s
    assert "of 100000 points in 1 groups" in result.message
    assert host.trained == [] and runner.training["big"].failures == 1
    spec = runner.specs["big"]
    assert [retry_delay(spec, n) for n in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert retry_delay(spec, 30) == spec.fit_every  # capped
