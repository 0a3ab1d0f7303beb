"""Part 4 of `make bench`: time and peak memory as the series, the variables and the window grow.

- series length 1e3..1e6 points (6 variables): one `lvad score` call each, CSV in
  and out, so the 1e6-point series goes through the same path a user runs;
- variables 1..300 and window length 16..256: `Detector.score` on 10,000 points.

Each point runs in a fresh process that reports its own peak RSS; models are
trained for one short epoch on synthetic data (their speed does not depend on
their weights). Plots: one PNG, time and peak RSS against each axis.

    python bench/scale.py --out var/bench/scale --png docs/bench-scale.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from procstat import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (1_000, 10_000, 100_000, 1_000_000)
VARIABLES = (1, 10, 30, 100, 300)
WINDOWS = (16, 32, 64, 128, 256)
SWEEP_POINTS = 10_000
FEATURES = 6
WINDOW = 32


def synthetic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """(n, d): sines of different periods plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    periods = 20 + 7 * np.arange(d)[None, :]
    return np.sin(2 * np.pi * t / periods) + 0.1 * rng.standard_normal((n, d))


def train_model(path: Path, d: int, window: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from model.config import ModelConfig
    from model.detector import Detector

    if not path.is_file():
        config = ModelConfig(window=window, epochs=1, max_train_windows=256)
        Detector.fit(synthetic(max(8 * window, 1000), d, seed=1), config).save(path)
    return path


def default_samples() -> int:
    """L, the posterior samples per window the sweeps' models score with (the default)."""
    sys.path.insert(0, str(ROOT))
    from model.config import ModelConfig

    return ModelConfig().mc_samples


# ------------------------------------------------------------------ child side
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    if args.cli:  # one `lvad score` call, as a user runs it
        from app.cli import main as lvad

        argv = ["score", str(args.model), str(args.data), "--out", str(args.scores)]
        code = lvad([*argv, "--stride", str(args.stride)])
        if code != 0:
            raise SystemExit(code)
    else:
        from app.ops.malloc import reuse_freed_buffers
        from model.detector import Detector

        reuse_freed_buffers()  # as `lvad` runs it (app/ops/malloc.py)
        detector = Detector.load(args.model)
        values = synthetic(args.points, detector.n_features, seed=2)
        started = time.perf_counter()
        detector.score(values, stride=args.stride)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


# ------------------------------------------------------------------ parent side
def run_child(args: list[str], threads: int) -> dict:
    command = [sys.executable, __file__, "--child", "--threads", str(threads), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, row: dict) -> None:
    print(f"  {label}: {row['seconds']:7.1f} s, peak {row['peak_rss_mib']:6.0f} MiB", flush=True)


def length_sweep(out: Path, threads: int, stride: int, lengths: tuple[int, ...]) -> list[dict]:
    model = train_model(out / f"model-d{FEATURES}-t{WINDOW}.lvad", FEATURES, WINDOW)
    rows = []
    for n in lengths:
        data = out / f"series-{n}.csv"
        if not data.is_file():
            frame = pd.DataFrame(
                synthetic(n, FEATURES, seed=2), columns=[f"x{i}" for i in range(FEATURES)]
            )
            frame.to_csv(data, index=False, float_format="%.5g")
        args = [
            "--cli",
            "--model",
            str(model),
            "--data",
            str(data),
            "--scores",
            str(out / "scores.csv"),
        ]
        rows.append(
            {"axis": "points", "value": n, **run_child([*args, "--stride", str(stride)], threads)}
        )
        report(f"{n:>9,} points", rows[-1])
    return rows


def model_sweep(out: Path, threads: int, stride: int) -> list[dict]:
    rows = []
    for axis, values in (("variables", VARIABLES), ("window", WINDOWS)):
        for value in values:
            d, window = (value, WINDOW) if axis == "variables" else (FEATURES, value)
            model = train_model(out / f"model-d{d}-t{window}.lvad", d, window)
            args = ["--model", str(model), "--points", str(SWEEP_POINTS), "--stride", str(stride)]
            rows.append({"axis": axis, "value": value, **run_child(args, threads)})
            report(f"{axis} {value:>4}", rows[-1])
    return rows


def plot(table: pd.DataFrame, path: Path, stride: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = {
        "points": "series length (points)",
        "variables": "variables",
        "window": "window length T",
    }
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for col, (axis, label) in enumerate(axes_names.items()):
        part = table[table["axis"] == axis]
        for r, (key, unit) in enumerate(
            (("seconds", "seconds"), ("peak_rss_mib", "peak RSS (MiB)"))
        ):
            ax = axes[r, col]
            ax.plot(part["value"], part[key], "o-")
            ax.set_xscale("log")
            ax.set_xticks(part["value"], [f"{v:,}" for v in part["value"]])
            ax.minorticks_off()
            if axis == "points" and key == "seconds":
                ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(unit)
            ax.grid(True, alpha=0.3)
    axes[0, 0].set_title("one lvad score CLI call, 6 variables")
    axes[0, 1].set_title(f"Detector.score, {SWEEP_POINTS:,} points")
    axes[0, 2].set_title(f"Detector.score, {SWEEP_POINTS:,} points")
    samples = default_samples()
    fig.suptitle(f"Scoring cost (L = {samples}, scoring stride {stride}, one process per point)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cli", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scores", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--stride", type=int, default=16, help="scoring stride (1: every window)")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "scale")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "bench-scale.png")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = length_sweep(args.out, args.threads, args.stride, tuple(args.lengths))
    rows += model_sweep(args.out, args.threads, args.stride)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "scale.csv", index=False)
    plot(table, args.png, args.stride)
    print(table.to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
