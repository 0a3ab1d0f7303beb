"""Pull mode's cost: how many detectors x groups one process scores at infer_every 15s,
and the load its queries put on Prometheus (docs/pull.md).

A real Prometheus (Debian's) holds synthetic history written by promtool: for each
group count G, D variables x G series at a 15 s step up to now. Each round is one
``DetectorRunner.score_detector`` of a detector whose D queries return G series:
the range queries (context + 1 new point per series), the alignment and one causal
score + band per group through the test host (tests/pull/model_host.py) with a
default-sized model (window 32, hidden 64, latent 8, 4 posterior draws, trained one
short epoch: speed does not depend on the weights), one torch thread. The fit read
is one training round's query of ``--fit-days`` of history (7 d at 15 s: 40,320
points per series, 4 queries per variable).

    OMP_NUM_THREADS=1 .venv/bin/python bench/pull_bench.py --groups 10,100,400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from app.pull.detectors_file import parse_detectors  # noqa: E402
from app.pull.exporter import PullMetrics  # noqa: E402
from app.pull.runner import DetectorRunner  # noqa: E402
from app.pull.scoring_round import ScoringState  # noqa: E402
from app.pull.training_round import TrainingState, training_round  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.data import prepare_array  # noqa: E402
from model.detector import Detector  # noqa: E402
from tests.app.live import free_port  # noqa: E402
from tests.pull.model_host import InProcessHost  # noqa: E402
from tests.pull.processes import PrometheusSetup, require_binary  # noqa: E402

STEP = 15
INFER_EVERY = 15.0


def history(prefix: str, groups: int, variables: int, start: int, end: int) -> str:
    """OpenMetrics text: ``{prefix}_v{i}{group="g0000"}`` every STEP s, sines and noise."""
    t = np.arange(start, end + 1, STEP)
    rng = np.random.default_rng(groups)
    lines = []
    for i in range(variables):
        lines.append(f"# TYPE {prefix}_v{i} gauge")
        for g in range(groups):
            values = (
                10 + np.sin(2 * np.pi * t / (600 + 60 * i) + g) + 0.1 * rng.standard_normal(t.size)
            )
            lines += [
                f'{prefix}_v{i}{{group="g{g:04d}"}} {v:.4f} {s}'
                for s, v in zip(t, values, strict=True)
            ]
    return "\n".join(lines) + "\n"


def write_blocks(promtool: str, root: Path, texts: list[str]) -> None:
    import subprocess

    source = root / "history.om"
    source.write_text("".join(texts) + "# EOF\n")
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(root / "data")],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    source.unlink()


def detectors_text(url: str, prefix: str, variables: int, fit_window: str = "1h") -> str:
    queries = ", ".join(f"v{i}: {prefix}_v{i}" for i in range(variables))
    return (
        f"prometheus: {{url: '{url}'}}\ndetectors:\n  - model: bench\n"
        f"    queries: {{{queries}}}\n    group_by: [group]\n    step: {STEP}s\n"
        f"    fit_window: {fit_window}\n    min_train_points: 64\n    max_groups: 100000\n"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_rounds(runner: DetectorRunner, prometheus_pid: int, rounds: int) -> dict:
    walls, cpus, prom = [], [], []
    stats = runner.reader.stats
    before = (stats.requests, stats.points, stats.bytes)
    for _ in range(rounds):
        runner.scoring["bench"] = ScoringState()  # every round: context + 1 new point
        prom_before, cpu_before, wall_before = (
            cpu_seconds(prometheus_pid),
            time.process_time(),
            time.perf_counter(),
        )
        result = runner.score_detector("bench")
        walls.append(time.perf_counter() - wall_before)
        cpus.append(time.process_time() - cpu_before)
        prom.append(cpu_seconds(prometheus_pid) - prom_before)
        assert result.status == "scored" and not result.skipped, (result.status, result.skipped)
    groups = len(result.groups)
    return {
        "groups": groups,
        "wall_s": float(np.median(walls)),
        "cpu_s": float(np.median(cpus)),
        "prometheus_cpu_s": float(np.median(prom)),
        "requests": (stats.requests - before[0]) / rounds,
        "points": (stats.points - before[1]) / rounds,
        "bytes": (stats.bytes - before[2]) / rounds,
    }


def default_model(variables: int) -> Detector:
    t = np.arange(3000)[:, None]
    values = np.sin(
        2 * np.pi * t / (40 + 7 * np.arange(variables)[None])
    ) + 0.1 * np.random.default_rng(0).standard_normal((3000, variables))
    config = ModelConfig(epochs=1, max_train_windows=2000)
    return Detector.fit(prepare_array(values, [f"v{i}" for i in range(variables)]), config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", default="10,100,400", help="group counts, comma-separated")
    parser.add_argument("--variables", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fit-days", type=float, default=7.0)
    parser.add_argument("--fit-groups", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = [int(g) for g in args.groups.split(",")]
    prometheus, promtool = (
        require_binary("prometheus", "prometheus"),
        require_binary("promtool", "prometheus"),
    )
    now = int(time.time()) // STEP * STEP
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = [history(f"bench_g{g}", g, args.variables, now - 3600, now) for g in counts]
        fit_start = now - int(args.fit_days * 86400)
        texts.append(history("bench_fit", args.fit_groups, args.variables, fit_start, now))
        started = time.perf_counter()
        write_blocks(promtool, root, texts)
        print(f"history written by promtool in {time.perf_counter() - started:.0f} s", flush=True)
        service = PrometheusSetup(prometheus, root, {}, history_end=now, port=free_port()).service()
        service.start()
        try:
            run(args, counts, service, float(now))
        finally:
            service.stop()


def run(args: argparse.Namespace, counts: list[int], service, now: float) -> None:
    """Every round reads up to ``now``, the history's end (later, Prometheus would fill
    the points past it from its 5-minute lookback only)."""
    host = InProcessHost()
    model = default_model(args.variables)
    host.add("bench", model)
    print(
        f"model: window {model.window}, hidden {model.config.hidden_size}, latent "
        f"{model.config.latent_dim}, L {model.config.mc_samples}; context "
        f"{host.context_points('bench')} points; torch threads {torch.get_num_threads()}"
    )
    print(
        "| groups | variables | round wall s | round CPU s | CPU ms per group "
        "| groups per core at 15 s | queries per round | points per round | bytes per round "
        "| Prometheus CPU ms per round |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for count in counts:
        text = detectors_text(service.url, f"bench_g{count}", args.variables)
        detectors = parse_detectors(text)
        runner = DetectorRunner(
            detectors, host, PullMetrics(CollectorRegistry()), clock=lambda: now
        )
        runner.score_detector("bench")  # warm-up: connections, first calls
        m = measure_rounds(runner, service.process.pid, args.rounds)
        runner.reader.close()
        per_group = m["cpu_s"] / m["groups"]
        print(
            f"| {m['groups']} | {args.variables} | {m['wall_s']:.3f} | {m['cpu_s']:.3f} | "
            f"{per_group * 1e3:.1f} | {INFER_EVERY / per_group:.0f} | {m['requests']:.0f} | "
            f"{m['points']:.0f} | {m['bytes']:.0f} | {m['prometheus_cpu_s'] * 1e3:.0f} |",
            flush=True,
        )
    fit_read(args, host, service, now)


def fit_read(args: argparse.Namespace, host: InProcessHost, service, now: float) -> None:
    """One training round's read of fit_window (the job itself is not run: max_jobs 0)."""
    window = f"{int(args.fit_days * 24)}h"
    text = detectors_text(service.url, "bench_fit", args.variables, fit_window=window)
    runner = DetectorRunner(parse_detectors(text), host, PullMetrics(CollectorRegistry()))
    host.max_jobs = 0  # the queue refuses: only the read is measured
    prom_before, wall_before = cpu_seconds(service.process.pid), time.perf_counter()
    result = training_round(runner.specs["bench"], host, runner.reader, TrainingState(), now)
    wall = time.perf_counter() - wall_before
    stats = runner.reader.stats
    runner.reader.close()
    print(
        f"\nfit read of {window} at {STEP}s, {args.fit_groups} groups x {args.variables} "
        "variables: "
        f"{stats.requests} queries, {stats.points} points, {stats.bytes / 1e6:.1f} MB, "
        f"{wall:.1f} s, Prometheus CPU {cpu_seconds(service.process.pid) - prom_before:.1f} s "
        f"({result.outcome}, {result.points} rows)"
    )


if __name__ == "__main__":
    main()
