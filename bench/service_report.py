"""The report of ``service_bench.py``: its tables, summary lines and environment.

Markdown rows from the measured ``Results`` (see ``service_bench.py``); nothing
here measures.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from baseline import twin_key
from harness import Run, percentile_ms

if TYPE_CHECKING:
    from service_bench import Phase, Results

ROOT = Path(__file__).resolve().parents[1]


def table(phases: list[Phase], results: Results) -> list[str]:
    head = (
        "| phase | req/s | windows/s | p50 ms | p99 ms | vs | ratio (rounds) | mean batch "
        "| model busy | server CPU | server CPU ms/req (own process) | client CPU | errors |"
    )
    lines = [head, "|" + "---|" * 13]
    for phase in phases:
        run, rate = results.totals[phase.key], results.rate(phase.key)
        vs, ratio = "", ""
        if phase.reference:
            vs = results.reference(phase)[0]
            spread = [results.ratio(phase, r) for r in range(len(results.rounds))]
            ratio = f"{results.ratio(phase):.0%} ({min(spread):.0%}-{max(spread):.0%})"
        lines.append(
            f"| {phase.label} | {run.requests / run.seconds:.1f} | {rate:.0f} "
            f"| {percentile_ms(run.latencies, 50):.1f} | {percentile_ms(run.latencies, 99):.1f} "
            f"| {vs} | {ratio} | {server_figures(phase, run)} "
            f"| {run.client_cpu / run.seconds:.2f} | {run.errors} |"
        )
    return lines


def server_figures(phase: Phase, run: Run) -> str:
    """mean batch | model busy | server CPU (cores) | per request (of it, the server's own
    process, the rest is its scoring child), from /metrics and /proc."""
    if not phase.clients:
        return f"{phase.size} | 1.00 | - | -"
    calls = run.server.get("lvad_batch_windows_count", 0.0)
    batch = run.server.get("lvad_batch_windows_sum", 0.0) / calls if calls else float("nan")
    busy = run.server.get("lvad_inference_duration_seconds_sum", 0.0) / run.seconds
    cpu = run.server_cpu or 0.0
    own = run.server_own_cpu or 0.0
    requests = run.requests or float("nan")
    per_request = f"{1000 * cpu / requests:.1f} ({1000 * own / requests:.1f})"
    return f"{batch:.1f} | {busy:.2f} | {cpu / run.seconds:.2f} | {per_request}"


def summary(phases: list[Phase], results: Results) -> str:
    parts = []
    for phase in (p for p in phases if p.reference):
        run = results.totals[phase.key]
        parts.append(
            f"{phase.key} = {results.ratio(phase):.0%} of {results.reference(phase)[0]} "
            f"({results.rate(phase.key):.0f} windows/s, p99 {percentile_ms(run.latencies, 99):.0f}"
            " ms)"
        )
    return "SUMMARY " + "; ".join(parts)


def environment(args: argparse.Namespace, model_path: Path) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    shown = model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT) else model_path
    threads = args.torch_threads or f"0 (torch default: {torch.get_num_threads()})"
    lines = [
        f"- CPU: {os.cpu_count()} x {cpu}; RAM {mem_kb / 2**20:.1f} GiB",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        f"- torch threads: {torch.get_num_threads()} in the bench process; server "
        f"LVAD_TORCH_THREADS={threads}; server env extra: {args.server_env or 'none'}",
        f"- model: {shown}",
        f"- load generator for the HTTP phases: {args.client}",
        f"- {args.rounds} rounds x {args.duration / args.rounds:.1f} s per phase",
    ]
    if args.baseline_tree:
        lines.append(f"- baseline: {args.baseline_tree.describe()}")
    return lines


def loads(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def add_profiles(lines: list[str], profiles: dict) -> list[str]:
    for key, (out, total, own, inclusive) in profiles.items():
        lines += ["", f"py-spy, {key}: {total} samples ({out.relative_to(ROOT)})", ""]
        lines += ["| self | % | inclusive | % |", "|---|---|---|---|"]
        for (a, n), (b, m) in zip(own, inclusive, strict=False):
            lines.append(f"| {a} | {n / total:.0%} | {b} | {m / total:.0%} |")
    return lines


# ---------------------------------------------------------------- the A/B report


def ab_table(phases, results) -> list[str]:
    """Each HTTP phase against its baseline twin: throughput and ratios, per round too,
    and the server CPU per request (which a share of the cores that varies between
    slices on a shared machine moves less than the throughput)."""
    lines = [
        "| phase | req/s | baseline req/s | current / baseline (rounds) "
        "| vs | current ratio | baseline ratio | server CPU ms/req: current; baseline (ratio) |",
        "|" + "---|" * 8,
    ]
    for phase, twin in pairs(phases):
        cpu, twin_cpu = cpu_ms_per_request(results, phase), cpu_ms_per_request(results, twin)
        lines.append(
            f"| {phase.label} | {requests_per_s(results, phase):.1f} "
            f"| {requests_per_s(results, twin):.1f} | {versus(results, phase, twin)} "
            f"| {results.reference(phase)[0]} | {results.ratio(phase):.0%} "
            f"| {results.ratio(twin):.0%} | {cpu:.2f}; {twin_cpu:.2f} ({cpu / twin_cpu:.0%}) |"
        )
    return lines


def cpu_ms_per_request(results, phase) -> float:
    """CPU milliseconds of the server process and its children per request."""
    run = results.totals[phase.key]
    return 1000 * (run.server_cpu or 0.0) / run.requests if run.requests else float("nan")


def pairs(phases) -> list[tuple]:
    """(current phase, its baseline twin) for every phase that has one."""
    twins = {p.key: p for p in phases if p.baseline}
    return [(p, twins[twin_key(p.key)]) for p in phases if twin_key(p.key) in twins]


def requests_per_s(results, phase) -> float:
    run = results.totals[phase.key]
    return run.requests / run.seconds if run.seconds else float("nan")


def versus(results, phase, twin) -> str:
    """Pooled rate of ``phase`` over ``twin``'s, with the spread of the per-round ratios."""
    spread = [
        results.rate(phase.key, r) / results.rate(twin.key, r) for r in range(len(results.rounds))
    ]
    pooled = results.rate(phase.key) / results.rate(twin.key)
    return f"{pooled:.0%} ({min(spread):.0%}-{max(spread):.0%})"


def goals(phases, results, batch_key: str, single_key: str) -> str:
    """The speed goals of a change to the service: large requests >= 85% of the raw
    model, and 1-window requests from many clients, micro-batched, at no fewer req/s
    than the baseline."""
    found = {p.key: p for p in phases}
    batch = found[batch_key]
    batch_ratio = results.ratio(batch)
    single_ratio = results.rate(single_key) / results.rate(twin_key(single_key))
    return (
        f"GOALS {batch_key} at >= 85% of {results.reference(batch)[0]}: {batch_ratio:.0%} "
        f"({'met' if batch_ratio >= 0.85 else 'not met'}; baseline "
        f"{results.ratio(found[twin_key(batch_key)]):.0%}); {single_key} at >= the "
        f"baseline's req/s: {single_ratio:.0%} of it ({'met' if single_ratio >= 1 else 'not met'})"
    )
