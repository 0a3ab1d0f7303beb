"""``lvad detectors check`` as a user runs it: against a real node exporter scraped by
the real Prometheus, and on an invalid file."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.app.conftest import seeded_store
from tests.app.live import HOST, LVAD, free_port, wait_until
from tests.pull.exposition import scrape, values_by
from tests.pull.processes import answers, node_exporter, require_binary
from tests.pull.test_detectors_file import with_changes

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_TIMEOUT = 30.0


def lvad_detectors(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LVAD), "detectors", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def node(prometheus, prometheus_setup, prometheus_api, pull_root):
    """Debian's node exporter (load, memory and CPU collectors only), scraped every second."""
    service = node_exporter(require_binary("prometheus-node-exporter", "prometheus-node-exporter"),
                            pull_root)  # fmt: skip
    service.start()
    target = service.url[len("http://") :]
    prometheus_setup.add_target("node", target)
    prometheus_api.wait_for(
        'count_over_time(node_load1{job="node"}[1m])', lambda v: v and v[0] >= 3, SCRAPE_TIMEOUT
    )
    yield target
    service.stop()


NODE_DETECTORS = """
prometheus:
  url: {url}
detectors:
  - model: node
    queries:
      cpu: sum by (instance) (rate(node_cpu_seconds_total{{mode!="idle"}}[5s]))
      load1: node_load1
      mem_used: node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes
    group_by: [instance]
    step: 1s
    fit_window: 1h
    min_train_points: 100
  - model: per-cpu
    queries:
      seconds: node_cpu_seconds_total
    group_by: [instance]
    step: 1s
    fit_window: 1h
    min_train_points: 100
"""


def test_check_reads_a_real_node_exporter_end_to_end(node, prometheus, tmp_path):
    detectors = tmp_path / "detectors.yml"
    detectors.write_text(NODE_DETECTORS.format(url=prometheus.url))
    result = lvad_detectors("check", str(detectors), "--steps", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{detectors}: valid, 2 detector(s)" in out
    for variable in ("cpu", "load1", "mem_used"):
        assert f"  {variable}: 1 series, " in out
    assert "groups: 1 usable, 0 skipped" in out
    assert f'{{instance="{node}"}}: ' in out and "complete points" in out
    # every CPU and mode of the host falls in one instance: refused, with what to do
    assert "per-cpu: last 5 steps of 1s" in out and "groups: 0 usable, 1 skipped" in out
    assert f'{{instance="{node}"}}: skipped, ambiguous_series' in out
    assert (
        "ambiguous: seconds: " in out
        and "differing in cpu, mode; add those labels to group_by" in out
    )


def test_check_names_a_failed_query_and_exits_1(prometheus, tmp_path):
    detectors = tmp_path / "detectors.yml"
    detectors.write_text(with_changes({"prometheus": {"url": prometheus.url}},
                                      {"queries": {"x": "rate(up[1m]"}}))  # fmt: skip
    result = lvad_detectors("check", str(detectors))
    assert result.returncode == 1
    assert "x: FAILED (bad_query)" in result.stdout and "queries failed for: node" in result.stdout


def test_check_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "detectors.yml"
    bad.write_text(with_changes({}, {"step": "fifteen"}))
    result = lvad_detectors("check", str(bad))
    assert result.returncode == 2
    assert "detectors[0].step" in result.stderr and "fifteen" in result.stderr


def test_run_needs_a_model_store(tmp_path):
    good = tmp_path / "detectors.yml"
    good.write_text(with_changes({}))
    result = lvad_detectors("run", str(good), "--once", env={"LVAD_STORE": str(tmp_path / "no")})
    assert result.returncode == 2 and "no model store at" in result.stderr


def test_run_serves_metrics_until_sigterm(prometheus, tmp_path, model_file):
    detectors = tmp_path / "detectors.yml"
    never = {"min_train_points": 10_000_000, "fit_window": "30m", "step": "1s", "fit_retry": "1h"}
    detectors.write_text(with_changes({"prometheus": {"url": prometheus.url}}, never))
    port = free_port()
    seeded_store(tmp_path / "store", model_file)  # a store with a model, read-only here
    command = [str(LVAD), "detectors", "run", str(detectors), "--listen", f"{HOST}:{port}"]
    env = {**os.environ, "LVAD_STORE": str(tmp_path / "store")}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://{HOST}:{port}/metrics"
        wait_until(lambda: answers(url), 60.0, "the detectors' /metrics")

        def attempted() -> bool:
            trainings = scrape(url).get("lvad_detector_trainings_total", [])
            return values_by(trainings, "outcome").get("too_little_data") == 1.0

        wait_until(attempted, 60.0, "a training attempt counted")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
        output = process.communicate()[0].decode()
    assert f"metrics on http://{HOST}:{port}/metrics" in output
