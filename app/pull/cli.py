"""``lvad detectors check FILE`` and ``lvad detectors run FILE [--once]``.

``add_parser(subparsers, host_factory)`` adds the ``detectors`` command to the ``lvad``
parser (``app/cli/detectors.py``); ``host_factory(args)`` gives ``run`` the service's
models (a ``ModelHost``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

from app.pull.detectors_file import DetectorSpec, load_detectors_file
from app.pull.durations import format_duration
from app.pull.exporter import PullMetrics
from app.pull.frames import align, describe, grid, missing_share
from app.pull.host import ModelHost
from app.pull.reader import PrometheusError, PrometheusReader, Series
from app.pull.runner import DetectorRunner
from app.pull.scoring_round import RoundResult, grid_end
from model.errors import LvadError

HostFactory = Callable[[argparse.Namespace], ModelHost]
CHECK_STEPS = 60


def add_parser(subparsers, host_factory: HostFactory | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "detectors", help="pull mode: check or run a detectors file (docs/pull.md)"
    )
    commands = parser.add_subparsers(dest="detectors_command", required=True)
    check = commands.add_parser("check", help="validate a detectors file, run each query once")
    check.add_argument("file")
    check.add_argument("--steps", type=int, default=CHECK_STEPS, help="steps back each query reads")
    check.set_defaults(func=cmd_check)
    run = commands.add_parser("run", help="run the detectors against the service's models")
    run.add_argument("file")
    run.add_argument("--once", action="store_true", help="score once, print, exit")
    run.add_argument("--listen", default="127.0.0.1:9464", help="HOST:PORT of /metrics")
    run.set_defaults(func=lambda args: cmd_run(args, host_factory))
    return parser


# ---------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace, out: TextIO = sys.stdout) -> None:
    detectors = load_detectors_file(args.file)  # DetectorsFileError: exit 2, field named
    print(
        f"{args.file}: valid, {len(detectors.detectors)} detector(s), "
        f"Prometheus {detectors.prometheus.url}",
        file=out,
    )
    reader = PrometheusReader(detectors.prometheus)
    try:
        failed = [
            spec.model
            for spec in detectors.detectors
            if not check_detector(spec, reader, args.steps, time.time(), out)
        ]
    finally:
        reader.close()
    if failed:
        print(f"queries failed for: {', '.join(failed)}", file=out)
        raise SystemExit(1)


def check_detector(
    spec: DetectorSpec, reader: PrometheusReader, steps: int, now: float, out: TextIO
) -> bool:
    """Run each query of ``spec`` over the last ``steps`` steps and describe what came
    back; False if a query failed."""
    end = grid_end(now, spec.step)
    start = end - (max(steps, 1) - 1) * spec.step
    print(f"{spec.model}: last {steps} steps of {format_duration(spec.step)}", file=out)
    results: dict[str, list[Series]] = {}
    for variable, query in spec.queries.items():
        try:
            results[variable] = reader.query_range(query, start, end, spec.step)
        except PrometheusError as exc:
            print(f"  {variable}: FAILED ({exc.reason}): {exc.message}", file=out)
            continue
        points = sum(len(s.times) for s in results[variable])
        print(f"  {variable}: {len(results[variable])} series, {points} points", file=out)
    if len(results) < len(spec.queries):
        return False
    alignment = align(results, spec.group_by, grid(start, end, spec.step), spec.max_groups)
    print(f"  groups: {len(alignment.frames)} usable, {len(alignment.skipped)} skipped", file=out)
    for key, frame in sorted(alignment.frames.items()):
        present = len(frame.times) - np.isnan(frame.values).any(axis=1).sum()
        shares = missing_share(frame.values)
        missing = ", ".join(f"{v} {s:.0%}" for v, s in zip(spec.variables, shares, strict=True))
        print(
            f"    {describe(spec.group_by, key)}: {present} complete points (missing: {missing})",
            file=out,
        )
    for key, reason in sorted(alignment.skipped.items()):
        print(f"    {describe(spec.group_by, key)}: skipped, {reason}", file=out)
    for problem in alignment.problems:
        print(
            f"    ambiguous: {problem}; add those labels to group_by, or aggregate the query",
            file=out,
        )
    return True


# ---------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace, host_factory: HostFactory | None) -> None:
    detectors = load_detectors_file(args.file)
    if host_factory is None:
        raise LvadError("lvad detectors run needs the service's models: run it from lvad")
    host = host_factory(args)
    if args.once:
        raise SystemExit(run_once(detectors, host))
    run_forever(detectors, host, args.listen)


def run_once(detectors, host: ModelHost, out: TextIO = sys.stdout) -> int:
    """Score every detector once and print the results; 1 if a detector failed."""
    from prometheus_client import CollectorRegistry

    runner = DetectorRunner(detectors, host, PullMetrics(CollectorRegistry()))
    try:
        results = runner.score_once()
    finally:
        runner.reader.close()
    for model, result in results.items():
        print_round(model, result, out)
    return 1 if any(r.status == "failed" for r in results.values()) else 0


def print_round(model: str, result: RoundResult, out: TextIO) -> None:
    if result.status == "no_model":
        print(f"{model}: no model yet (it trains once min_train_points exist)", file=out)
        return
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()))
    errors = ", ".join(f"{n} {reason}" for reason, n in sorted(result.errors.items()))
    print(
        f"{model}: {result.status}, {len(result.groups)} groups scored"
        + (f"; skipped: {skipped}" if skipped else "")
        + (f"; errors: {errors}" if errors else ""),
        file=out,
    )
    for group in result.groups:
        scored = group.exported()
        flag = "ANOMALY" if scored.is_anomaly else "normal"
        print(
            f"  {describe(list(group.labels), tuple(group.labels.values()))} "
            f"score {scored.ratio:.3f} {flag} (version {group.result.model_version})",
            file=out,
        )
        band = group.result.expected
        for i, variable in enumerate(result.variables):
            print(
                f"    {variable} {group.latest[i]:.6g}: expected {band.mean[i]:.6g} "
                f"[{band.lower[i]:.6g}, {band.upper[i]:.6g}]",
                file=out,
            )


def run_forever(detectors, host: ModelHost, listen: str) -> None:
    """Run the detectors and serve /metrics on ``listen`` until SIGINT or SIGTERM."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    address, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), address or "127.0.0.1", registry)
    runner = DetectorRunner(detectors, host, PullMetrics(registry))
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    runner.start()
    print(f"detectors running; metrics on http://{listen}/metrics", file=sys.stderr)
    stopping.wait()
    runner.stop()
    server.shutdown()
