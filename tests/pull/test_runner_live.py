"""The runner end to end, on loopback: a real Prometheus with 40 minutes of history
(promtool) scraping the controlled exporter; the runner trains from that history
through the in-process host, exports on its own /metrics (which Prometheus scrapes
too), flags an injected anomaly, and survives Prometheus stopping and starting again.

Intervals are 1 s (step, infer_every, scrapes); waits are bounded by generous
timeouts, and what is asserted about latency is counted in steps of data time.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from app.pull.cli import run_once
from app.pull.detectors_file import DetectorsFile, parse_detectors
from app.pull.exporter import PullMetrics
from app.pull.frames import align, grid
from app.pull.reader import PrometheusReader
from app.pull.runner import DetectorRunner
from app.pull.scoring_round import ScoringState, score_round
from tests.app.live import HOST, free_port, wait_until
from tests.pull.exposition import scrape, values_by
from tests.pull.model_host import InProcessHost

TRAINING_TIMEOUT = 120.0  # seconds: a tiny model on ~3,600 points, on a shared machine
ROUND_TIMEOUT = 30.0
PARAMS = {"window": 16, "hidden_size": 16, "latent_dim": 4, "epochs": 4, "seed": 1}
DETECTORS = """
prometheus:
  url: {url}
  timeout: 2s
  attempts: 2
detectors:
  - model: demo
    queries:
      load: demo_load
      latency: demo_latency
    group_by: [host]
    step: 1s
    infer_every: 1s
    fit_every: 1h
    fit_window: 30m
    fit_retry: 1s
    min_train_points: 1000
    params: {params}
"""


@dataclass
class Live:
    detectors: DetectorsFile
    runner: DetectorRunner
    host: InProcessHost
    metrics_url: str

    def samples(self) -> dict:
        return scrape(self.metrics_url)

    def wait_for(self, condition, what: str, timeout: float = ROUND_TIMEOUT) -> dict:
        found: dict = {}

        def check() -> bool:
            found.update(self.samples())
            return condition(found)

        try:
            wait_until(lambda: (found.clear(), check())[1], timeout, what, interval=0.2)
        except AssertionError as exc:
            interesting = {k: [(s.labels, s.value) for s in v] for k, v in found.items()
                           if k.startswith(("lvad_anomaly", "lvad_detector_"))}  # fmt: skip
            raise AssertionError(f"{exc}; last seen: {interesting}") from None
        return found


def anomaly_flags(found: dict) -> dict[str, float]:
    return values_by(found.get("lvad_anomaly", []), "host")


@pytest.fixture(scope="module")
def live(prometheus, prometheus_setup):
    detectors = parse_detectors(DETECTORS.format(url=prometheus.url, params=json.dumps(PARAMS)))
    host = InProcessHost()
    registry = CollectorRegistry()
    port = free_port()
    server, _ = start_http_server(port, HOST, registry)
    runner = DetectorRunner(detectors, host, PullMetrics(registry))
    runner.start()
    prometheus_setup.add_target("lvad", f"{HOST}:{port}")
    try:
        wait_until(lambda: host.variables("demo") is not None, TRAINING_TIMEOUT, "the training")
        yield Live(detectors, runner, host, f"http://{HOST}:{port}/metrics")
    finally:
        runner.stop()
        server.shutdown()
        host.close()


def test_trains_from_history_then_scores_every_group(live):
    (model, rows, names, params), *more = live.host.trained
    assert (model, names, params, more) == ("demo", ["load", "latency"], PARAMS, [])
    assert 3400 <= rows <= 3602  # 30 minutes of 2 hosts at 1 s, from promtool's history
    found = live.wait_for(
        lambda f: (
            set(anomaly_flags(f)) == {"a", "b"}
            and values_by(f["lvad_detector_trainings_total"], "outcome")["succeeded"] == 1
        ),
        "both groups scored, the job seen succeeded",
    )
    bands: dict = {}
    for sample in found["lvad_expected"]:
        key = (sample.labels["host"], sample.labels["variable"])
        bands.setdefault(key, {})[sample.labels["bound"]] = sample.value
    assert set(bands) == {(h, v) for h in "ab" for v in ("load", "latency")}
    for band in bands.values():
        assert band["lower"] < band["mean"] < band["upper"]
    assert 5 < bands[("a", "load")]["mean"] < 15  # the load swings 7..13
    assert values_by(found["lvad_detector_series"], "model") == {"demo": 2.0}
    last_success = found["lvad_detector_last_success_timestamp_seconds"][0].value
    assert time.time() - 30 < last_success <= time.time()
    trainings = values_by(found["lvad_detector_trainings_total"], "outcome")
    assert trainings["submitted"] == 1 and trainings["succeeded"] == 1
    context = live.host.context_points("demo")
    assert context == 16 + 2 * 16 - 2  # the window, and the ranking's widest average
    streams = {stream for _, stream, _, _ in live.host.calls}
    assert streams == {'demo{host="a"}', 'demo{host="b"}'}
    assert all(c >= context and rows > c for _, _, rows, c in live.host.calls)


def test_each_point_is_scored_with_its_own_history_as_context(live):
    """A round's score of the newest point equals scoring a long stretch of the group's
    history in one call: the round's context is the real history, not a cold start."""
    runner = DetectorRunner(live.detectors, live.host, PullMetrics(CollectorRegistry()))
    try:
        result = runner.score_once()["demo"]
        (group,) = [g for g in result.groups if g.labels == {"host": "a"}]
        end = float(group.times[-1])
        start = end - 199
        spec = live.detectors.detectors[0]
        answers = {v: runner.reader.query_range(spec.queries[v], start, end, 1.0)
                   for v in ("load", "latency")}  # fmt: skip
    finally:
        runner.reader.close()
    frame = align(answers, ["host"], grid(start, end, 1.0), 10).frames[("a",)]
    detector = live.host.active("demo")
    whole = detector.score(frame.values[:, [detector.feature_names.index(v)
                           for v in ("load", "latency")]], causal=True)  # fmt: skip
    np.testing.assert_allclose(group.result.alarm_score[-1], whole.alarm_score[-1], rtol=1e-5)
    printed = io.StringIO()
    assert run_once(live.detectors, live.host, printed) == 0
    text = printed.getvalue()
    assert "demo: scored, 2 groups scored" in text and '{host="b"} score' in text
    assert "    latency " in text and ": expected " in text


def test_an_injected_anomaly_is_flagged_within_three_rounds(live, exporter, prometheus_api):
    _, control = exporter
    # the jump where the written history meets the first live scrapes (Prometheus was
    # starting) leaves the context within two windows; then normal data is not flagged
    live.wait_for(lambda f: anomaly_flags(f) == {"a": 0.0, "b": 0.0}, "no flag", timeout=60.0)
    injected = time.time()
    control.write_text(json.dumps({"a": {"demo_latency": 60.0}}))
    try:
        found = live.wait_for(lambda f: anomaly_flags(f).get("a") == 1.0, "the anomaly flagged")
        # in data time, so a round delayed on a busy machine does not count against it:
        # the value is scraped within 1 s, and flagged at most 3 steps after that
        flagged = [
            t for t in live.host.flagged['demo{host="a"}'] if t.astype(float) / 1e9 > injected
        ]
        assert flagged and flagged[0].astype(float) / 1e9 <= injected + 1.0 + 3 * 1.0
        scores = values_by(found["lvad_anomaly_score"], "host")
        assert scores["a"] > 1.0 and scores["a"] > scores["b"]
        upper = {(s.labels["host"], s.labels["variable"]): s.value
                 for s in found["lvad_expected"] if s.labels["bound"] == "upper"}  # fmt: skip
        assert upper[("a", "latency")] < 130  # the band stays where normal latency is (~85-115)
        prometheus_api.wait_for('lvad_anomaly{model="demo", host="a"}', lambda v: v == [1.0],
                                ROUND_TIMEOUT, "Prometheus scraping the flag")  # fmt: skip
    finally:
        control.write_text("{}")


def test_a_stopped_series_drops_its_group_and_a_new_group_waits_for_history(live, exporter):
    _, control = exporter
    control.write_text(json.dumps({"absent": ["b/demo_latency"], "extra_hosts": ["c"]}))
    try:
        found = live.wait_for(
            lambda f: (
                set(anomaly_flags(f)) == {"a"}
                and values_by(f["lvad_detector_groups_skipped_total"], "reason")["short_history"]
                > 0
            ),
            "b dropped, c waiting",
        )
        skipped = values_by(found["lvad_detector_groups_skipped_total"], "reason")
        assert skipped["stale"] > 0  # b: no new complete point since its latency stopped
        assert values_by(found["lvad_detector_series"], "model") == {"demo": 1.0}
        assert {s.labels["host"] for s in found["lvad_expected"]} == {"a"}
    finally:
        control.write_text("{}")


def test_a_model_with_other_variables_is_not_used(live):
    spec = live.detectors.detectors[0]
    changed = spec.model_copy(update={"queries": {**spec.queries, "extra": "demo_load * 2"}})
    reader = PrometheusReader(live.detectors.prometheus)
    try:
        result = score_round(changed, live.host, reader, ScoringState(), time.time())
    finally:
        reader.close()
    assert result.status == "failed" and dict(result.errors) == {"model_mismatch": 1}
    assert result.groups == [] and reader.stats.requests == 0


def test_prometheus_down_then_back_the_runner_recovers_by_itself(live, prometheus):
    found = live.wait_for(lambda f: "lvad_anomaly_score" in f, "scores exported")
    errors = values_by(found["lvad_detector_errors_total"], "reason")["unreachable"]
    prometheus.stop()
    try:
        down = live.wait_for(
            lambda f: (
                "lvad_anomaly_score" not in f
                and values_by(f["lvad_detector_errors_total"], "reason")["unreachable"] > errors
            ),
            "the scores dropped and the errors counted",
        )
        assert "lvad_expected" not in down and "lvad_anomaly" not in down
        assert values_by(down["lvad_detector_series"], "model") == {"demo": 0.0}
    finally:
        restarted = time.time()
        prometheus.start()
    back = live.wait_for(
        lambda f: (
            {"a", "b"} <= set(anomaly_flags(f))  # and c, whose last value Prometheus's
            # lookback may carry past the restart
            and f["lvad_detector_last_success_timestamp_seconds"][0].value > restarted
        ),
        f"scores again after the restart at {restarted:.1f}",
        timeout=60.0,
    )
    assert values_by(back["lvad_detector_series"], "model")["demo"] >= 2
    scored = values_by(back["lvad_detector_points_scored_total"], "model")["demo"]
    assert scored > values_by(down["lvad_detector_points_scored_total"], "model")["demo"]
