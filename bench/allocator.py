"""Model calls with glibc's default malloc settings against ``reuse_freed_buffers``.

    .venv/bin/python bench/allocator.py [--model PATH] [--pairs 5] [--batch 512]

Run it as a script (it imports its sibling ``service_bench.py``). ``mallopt``
changes a process for good, so every measurement is a fresh process, started
without MALLOC_* or GLIBC_TUNABLES variables: pairs of (defaults,
``app.ops.malloc.reuse_freed_buffers``), their order swapped every other pair, each
scoring ``--batch`` windows of the demo data with ``Detector.score_windows`` on
one thread. Each reports its best round of 3 x 15 calls: milliseconds, user and
kernel CPU and minor page faults per call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CALLS, ROUNDS = 15, 3


def child(model: Path, batch: int, tuned: bool) -> None:
    if tuned:
        from app.ops.malloc import reuse_freed_buffers

        if not reuse_freed_buffers():
            raise SystemExit("reuse_freed_buffers() did not apply here")
    import torch
    from service_bench import bench_windows

    from model.detector import Detector

    torch.set_num_threads(1)
    detector = Detector.load(model)
    windows = bench_windows(detector, batch)
    for _ in range(3):
        detector.score_windows(windows)
    rounds = []
    for _ in range(ROUNDS):
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(CALLS):
            detector.score_windows(windows)
        seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
        rounds.append(
            {
                "ms": 1000 * seconds / CALLS,
                "user_ms": 1000 * (after.ru_utime - before.ru_utime) / CALLS,
                "kernel_ms": 1000 * (after.ru_stime - before.ru_stime) / CALLS,
                "faults": (after.ru_minflt - before.ru_minflt) / CALLS,
            }
        )
    print(json.dumps(min(rounds, key=lambda r: r["ms"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model file (default: the cached demo model)")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--child", choices=("defaults", "tuned"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model is None:
        from service_bench import default_model

        args.model = default_model().resolve()
    if args.child:
        child(args.model, args.batch, args.child == "tuned")
        return
    results: dict[str, list[dict]] = {"defaults": [], "tuned": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    for pair in range(args.pairs):
        for kind in sorted(results, reverse=bool(pair % 2)):
            command = [sys.executable, __file__, "--child", kind, "--model", str(args.model)]
            done = subprocess.run(
                [*command, "--batch", str(args.batch)], capture_output=True, text=True, env=env
            )
            if done.returncode:
                raise SystemExit(f"the {kind} run failed:\n{done.stderr}")
            results[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"Detector.score_windows, {args.batch} windows, one thread; {args.pairs} pairs")
    print("| malloc | ms per call (median; each run) | user ms | kernel ms | page faults |")
    print("| --- | --- | --- | --- | --- |")
    for kind, runs in results.items():
        ms = [run["ms"] for run in runs]
        each = ", ".join(f"{m:.1f}" for m in ms)
        means = {k: statistics.mean(run[k] for run in runs) for k in ("user_ms", "kernel_ms")}
        faults = statistics.mean(run["faults"] for run in runs)
        print(
            f"| {kind} | {statistics.median(ms):.1f} ({each}) | {means['user_ms']:.1f} "
            f"| {means['kernel_ms']:.1f} | {faults:,.0f} |"
        )


if __name__ == "__main__":
    main()
