"""Part 2 of `make bench`: model throughput against the machine's limit.

Scoring windows/s (the scoring engine, the model call behind every score: ONNX
Runtime by default, and torch's ``reconstruction_log_prob`` beside it) at batch 1,
64 and 512 for L = 1 and L = 10 posterior samples, and training
windows/s (forward, backward and Adam step at the configured batch size), each
next to the bound that the model's FLOPs per window (counted from the
architecture, ``model.network.flops_per_window``) and the machine's measured peak
(a 2048 x 2048 float32 matmul) allow. Every figure is the best of several short
rounds, which on a shared machine is the closest to what the code itself costs.

    python bench/model_bench.py --threads 1 2 --out var/bench/model.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.ops.malloc import reuse_freed_buffers  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.engine import DEFAULT_ENGINE, make_engine  # noqa: E402
from model.network import LSTMVAE, fixed_noise, flops_per_window, reconstruction_log_prob  # noqa: E402  # noqa: E402
from model.train import make_windows, train_network  # noqa: E402

FEATURES = 6  # as the demo data and the service benchmark's model
BATCHES = (1, 64, 512)
SAMPLES = (1, 10)
MATMUL_N = 2048


def best_seconds(call: Callable[[], object], rounds: int = 5, seconds: float = 0.3) -> float:
    """Fastest mean time per call over ``rounds`` rounds of about ``seconds`` each."""
    call()  # warm-up: first-call allocations, oneDNN primitive creation
    best = float("inf")
    for _ in range(rounds):
        calls, started = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - started < seconds:
            call()
            calls += 1
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def peak_gflops() -> float:
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    return 2 * MATMUL_N**3 / best_seconds(lambda: a @ b) / 1e9


def scoring_rows(net: LSTMVAE, config: ModelConfig, peak: float) -> list[dict]:
    """Every batch and L with the default engine (``score``) and with torch; at batch 512
    also torch's earlier single decoder call (before/after)."""
    rows = []
    for samples in SAMPLES:
        noise = fixed_noise(samples, config.latent_dim, seed=1)
        flops = flops_per_window(FEATURES, config, samples)
        engine = make_engine(net, noise)
        for batch in BATCHES:
            x = torch.randn(batch, config.window, FEATURES)  # (batch, T, D)
            calls: dict[str, Callable[[], object]] = {
                f"score ({engine.name})" if engine.name != DEFAULT_ENGINE else "score": (
                    lambda x=x, engine=engine: engine(x)
                ),
                "score, torch": lambda x=x, noise=noise: reconstruction_log_prob(net, x, noise),
            }
            if batch == max(BATCHES):
                calls["score, torch, one decoder call (before)"] = (
                    lambda x=x, noise=noise, rows=batch * samples: reconstruction_log_prob(
                        net, x, noise, decode_rows=rows
                    )
                )
            for kind, call in calls.items():
                rows.append(row(kind, samples, batch, batch / best_seconds(call), flops, peak))
    return rows


def training_row(config: ModelConfig, peak: float, windows: int = 2048) -> dict:
    """Windows/s of one epoch of the real training loop (validation on 64 windows)."""
    torch.manual_seed(0)
    series = torch.randn(windows + config.window + 64, FEATURES)
    train, val = (
        make_windows(series[:windows], config.window),
        make_windows(series[-96:], config.window),
    )
    net = LSTMVAE(FEATURES, config)
    epoch = config.replace(epochs=1, max_train_windows=len(train))
    train_network(net, train[: config.batch_size * 2], val, epoch)  # warm-up
    rate = max(len(train) / train_network(net, train, val, epoch).seconds for _ in range(3))
    # backward costs about twice the forward pass: 3x the FLOPs of scoring with L = 1
    return row("train", 1, config.batch_size, rate, 3 * flops_per_window(FEATURES, config, 1), peak)


def row(kind: str, samples: int, batch: int, rate: float, flops: int, peak: float) -> dict:
    bound = peak * 1e9 / flops
    return {
        "kind": kind,
        "L": samples,
        "batch": batch,
        "windows/s": rate,
        "MFLOP/window": flops / 1e6,
        "GFLOP/s": rate * flops / 1e9,
        "bound windows/s": bound,
        "of bound": rate / bound,
    }


def measure(threads: int) -> pd.DataFrame:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = ModelConfig()
    net = LSTMVAE(FEATURES, config).eval()
    peak = peak_gflops()
    rows = [*scoring_rows(net, config, peak), training_row(config, peak)]
    table = pd.DataFrame(rows)
    table.insert(0, "threads", threads)
    table.insert(1, "peak GFLOP/s", peak)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "model.csv")
    args = parser.parse_args()
    reuse_freed_buffers()  # as the served and command-line model runs (app/ops/malloc.py)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat([measure(t) for t in args.threads], ignore_index=True)
    table.to_csv(args.out, index=False)
    print(f"load average before/after: {os.getloadavg()}")
    print(table.to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
