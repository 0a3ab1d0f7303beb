"""`make bench`: the four benchmarks of docs/benchmarks.md in one run, then a summary of ratios.

1. peers: our LSTM-VAE beside TSB-AD's own implementations on the same files (peers.py);
2. model: scoring and training windows/s against the FLOP bound (model_bench.py);
3. service: /v1/score against the raw model (service_bench.py, run as it is);
4. scale: time and peak memory against length, variables and window (scale.py).

Tables go to ``var/bench/report.md``; the last lines printed are the summary.

    .venv/bin/python bench/run_all.py --peer-python var/bench-venv/bin/python [--skip service]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import model_bench
import numpy as np
import pandas as pd
import peers
import scale
import torch

from model.evaluation.evaluate import markdown_table

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench"
PARTS = ("peers", "model", "service", "scale")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return (
        f"{os.cpu_count()} x {cpu}, {mem_gib:.1f} GiB RAM; Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}"
    )


def load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def markdown(frame: pd.DataFrame) -> str:
    return markdown_table(frame) if len(frame) else "(nothing measured)"


def run_peers(args: argparse.Namespace) -> tuple[str, list[str]]:
    files = (
        [args.data / f for f in args.files]
        if args.files
        else peers.default_files(args.data, peers.DEFAULT_PER_SET)
    )
    methods = [*peers.OURS, *peers.PEERS]
    table = peers.run_peers(
        files, methods, args.peer_python, OUT / "peers", args.threads, peers.ROW_CAPS
    )
    lines, summary = [], []
    for ours in peers.OURS:
        if ours not in set(table["method"]):
            continue
        ratios = peers.summarize(table, ours)
        lines += [
            f"Ratios are {ours} / the method, on the files both ran.",
            "",
            markdown(ratios),
            "",
        ]
        omni = ratios[ratios["method"] == "OmniAnomaly"]
        if len(omni):
            row = omni.iloc[0]
            summary.append(
                f"peers: {ours} / OmniAnomaly: time {row[f'time {ours}/it']:.2f} (goal <= 0.5), "
                f"VUS-PR {row[f'VUS-PR {ours}/it']:.2f} (goal > 1), "
                f"peak RSS {row[f'RSS {ours}/it']:.2f}"
            )
    per_file = table.drop(columns=["total", "rows"]).rename(
        columns={"fit": "train s", "score": "score s"}
    )
    lines += ["Per file and method:", "", markdown(per_file)]
    return "\n".join(lines), summary


def run_model(args: argparse.Namespace) -> tuple[str, list[str]]:
    table = pd.concat([model_bench.measure(t) for t in args.model_threads], ignore_index=True)
    table.to_csv(OUT / "model.csv", index=False)
    summary = []
    for (threads, kind, samples, batch), row in table.set_index(
        ["threads", "kind", "L", "batch"]
    ).iterrows():
        if (kind, samples, batch) not in (("score", 10, 512), ("train", 1, 64)):
            continue
        goal = "; goal >= 50%" if kind == "score" else ""
        summary.append(
            f"model: {kind} L={samples} batch {batch}, {threads} thread(s): "
            f"{row['windows/s']:.0f} windows/s = {row['of bound']:.0%} of the FLOP bound "
            f"({row['GFLOP/s']:.1f} of {row['peak GFLOP/s']:.1f} GFLOP/s{goal})"
        )
    return markdown(table), summary


def run_service(args: argparse.Namespace) -> tuple[str, list[str]]:
    fragment = OUT / "service.md"
    command = [sys.executable, str(ROOT / "bench" / "service_bench.py"), "--out", str(fragment)]
    subprocess.run([*command, *args.service_args.split()], check=True, cwd=ROOT)
    text = fragment.read_text()
    summary = [  # GOALS: with --baseline-tree in --service-args
        line.replace("SUMMARY", "service:").replace("GOALS", "service goals:")
        for line in text.splitlines()
        if line.startswith(("SUMMARY", "GOALS"))
    ]
    return text, summary


def run_scale(args: argparse.Namespace) -> tuple[str, list[str]]:
    out = OUT / "scale"
    out.mkdir(parents=True, exist_ok=True)
    rows = scale.length_sweep(out, args.threads, args.stride, scale.LENGTHS)
    rows += scale.model_sweep(out, args.threads, args.stride)
    table = pd.DataFrame(rows)
    table.to_csv(out / "scale.csv", index=False)
    scale.plot(table, args.png, args.stride)
    points = table[table["axis"] == "points"].set_index("value")
    big, small = points.index.max(), points.index.max() // 10
    summary = [
        f"scale: {big:,} points in {points.at[big, 'seconds']:.1f} s "
        f"({points.at[big, 'seconds'] / points.at[small, 'seconds']:.1f}x the time of {small:,}; "
        f"linear = 10x), peak RSS {points.at[big, 'peak_rss_mib']:.0f} MiB "
        f"vs {points.at[small, 'peak_rss_mib']:.0f} MiB"
    ]
    return markdown(table), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peer-python", default=str(ROOT / "var" / "bench-venv" / "bin" / "python")
    )
    parser.add_argument("--data", type=Path, default=peers.DATA)
    parser.add_argument("--files", nargs="*", help="TSB-AD file names (default: smallest per set)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, peers and scale")
    parser.add_argument("--model-threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stride", type=int, default=16, help="scoring stride of the scale part")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "bench-scale.png")
    parser.add_argument("--service-args", default="--duration 8 --rounds 2 --torch-threads 1")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runners = {"peers": run_peers, "model": run_model, "service": run_service, "scale": run_scale}
    report, summary = [f"# make bench\n\nMachine: {machine()}\n"], []
    for part in (p for p in PARTS if p not in args.skip):
        print(f"\n=== {part} (load average {load()})", flush=True)
        started, before = time.perf_counter(), load()
        text, lines = runners[part](args)
        took = time.perf_counter() - started
        report += [
            f"## {part}\n",
            f"{took:.0f} s; load average (1/5/15 min) before {before}, after {load()}\n",
            text,
            "",
        ]
        summary += lines
    (OUT / "report.md").write_text(
        "\n".join(report) + "\n## summary\n\n" + "\n".join(f"- {s}" for s in summary) + "\n"
    )
    print(f"\ntables: {OUT / 'report.md'}\n\nSUMMARY")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
