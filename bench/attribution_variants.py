"""Attribution variants on the SMD standard protocol: HitRate@100% / @150% per variant.

For every machine, one model is trained with the default configuration on
``train/<machine>.npy`` (cached under ``--models``); the test part is scored once
(per-step, per-variable log-probabilities and reconstruction means, both the mean
over the covering windows), and each variant below ranks the variables from those
same numbers. The shipped attribution is the first row. Choosing among these rows
by their hit rates would be tuning on test labels (``interpretation_label``), so
this table is a record of what was measured, not a selection procedure.

``--demo SEED ...`` measures the same variants on the demo data instead (``lvad
demo``, whose events label their root variable and its dependents; models cached
with ``bench/event_attribution.py``'s), the development set for attribution.

    .venv/bin/python bench/attribution_variants.py ../shared/data/smd
    .venv/bin/python bench/attribution_variants.py --demo 1 2 3 4 5 6 7 8
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from event_attribution import cached, demo_segments

from model.config import ModelConfig
from model.detector import Detector, split_point
from model.evaluation.demo import DEMO_FEATURES, make_demo
from model.evaluation.smd import Segments, hit_rate, read_interpretation
from model.scoring import add_windows, moving_average, score_series, window_starts


@torch.inference_mode()
def reconstruction_mean(det: Detector, values: np.ndarray) -> np.ndarray:
    """Normalized (n, D) -> mean of p(x_t|z = mu) over the windows covering each step."""
    window, (n, d) = det.window, values.shape
    series = torch.as_tensor(values, dtype=torch.float32)
    total, count = np.zeros((n, d)), np.zeros((n, 1))
    all_starts = window_starts(n, window, 1)
    for starts in np.array_split(all_starts, max(1, len(all_starts) // 1024)):
        index = torch.from_numpy(starts[:, None] + np.arange(window))
        mu, _ = det.net.encode(series[index])
        add_windows(total, starts, det.net.decode(mu, window)[0].numpy())  # (B, T, D)
        add_windows(count, starts, np.ones((1, window, 1)))
    return total / count


def smoothed(values: np.ndarray, width: int) -> np.ndarray:
    return moving_average(values, width, causal=False)


def excess(test: np.ndarray, validation: np.ndarray) -> np.ndarray:
    return np.clip(test - np.median(validation, axis=0), 0.0, None)


@dataclass(frozen=True)
class Parts:
    """One machine's test part and validation tail, as the variants see them."""

    surprise: np.ndarray  # (n, D) -log p(x_t | z), mean over the covering windows
    val_surprise: np.ndarray  # (n_val, D) the same on the validation tail
    error: np.ndarray  # (n, D) |x - reconstruction mean|, training z-units
    val_error: np.ndarray  # (n_val, D)
    x: np.ndarray  # (n, D) the test part in training z-units
    window: int


def standardized(p: Parts) -> np.ndarray:
    q75, q25 = np.percentile(p.val_surprise, [75, 25], axis=0)
    centred = smoothed(p.surprise, p.window) - np.median(p.val_surprise, axis=0)
    return centred / np.maximum(q75 - q25, 1e-3)


VARIANTS: dict[str, Callable[[Parts], np.ndarray]] = {
    "excess -log p over its validation median, smoothed over T (shipped)": lambda p: excess(
        smoothed(p.surprise, p.window), p.val_surprise
    ),
    "the same, unsmoothed": lambda p: excess(p.surprise, p.val_surprise),
    "the same, smoothed over 2T": lambda p: excess(
        smoothed(p.surprise, 2 * p.window), p.val_surprise
    ),
    "the same, smoothed over 4T": lambda p: excess(
        smoothed(p.surprise, 4 * p.window), p.val_surprise
    ),
    "-log p standardized by its validation median and IQR, smoothed over T": standardized,
    "absolute value in training z-units (no model)": lambda p: np.abs(p.x),
    "squared reconstruction error, smoothed over T": lambda p: smoothed(p.error**2, p.window),
    "squared reconstruction error, smoothed over 2T": lambda p: smoothed(p.error**2, 2 * p.window),
    "squared error over its validation median, smoothed over 4T": lambda p: excess(
        smoothed(p.error**2, 4 * p.window), p.val_error**2
    ),
}


def machine_rates(smd: Path, machine: str, models: Path) -> dict[str, tuple[float, float]]:
    train = np.load(smd / "train" / f"{machine}.npy").astype(np.float64)
    test = np.load(smd / "test" / f"{machine}.npy").astype(np.float64)
    segments = read_interpretation(smd / "interpretation_label" / f"{machine}.txt")
    return case_rates(train, test, segments, models / f"{machine}.lvad")


def demo_rates(seed: int, models: Path) -> dict[str, tuple[float, float]]:
    demo = make_demo(seed)
    train, test = (part[DEMO_FEATURES].to_numpy(float) for part in (demo.train, demo.test))
    return case_rates(train, test, demo_segments(demo.events), models / f"demo-{seed}.lvad")


def case_rates(
    train: np.ndarray, test: np.ndarray, segments: Segments, path: Path
) -> dict[str, tuple[float, float]]:
    det = cached(path, train, ModelConfig())
    cut, window = split_point(len(train), det.config), det.window
    x, tail = det.normalize(test), det.normalize(train[cut - window + 1 :])
    parts = Parts(
        -score_series(det.engine, x).log_prob,
        -score_series(det.engine, tail).log_prob[window - 1 :],
        np.abs(x - reconstruction_mean(det, x)),
        np.abs(tail - reconstruction_mean(det, tail))[window - 1 :],
        x,
        window,
    )
    rates = {}
    for name, variant in VARIANTS.items():
        shares = np.nan_to_num(variant(parts), nan=-np.inf)
        rates[name] = (hit_rate(shares, segments, 100), hit_rate(shares, segments, 150))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "smd", type=Path, nargs="?", help="SMD directory (train/, test/, interpretation_label/)"
    )
    parser.add_argument("--demo", type=int, nargs="*", help="demo seeds instead of SMD")
    parser.add_argument("--models", type=Path, help="model cache (default: by data set)")
    args = parser.parse_args()
    if (args.smd is None) == (args.demo is None):
        parser.error("give an SMD directory or --demo SEED ..., not both")
    torch.set_num_threads(1)
    if args.demo is not None:
        args.models = args.models or Path("var/attribution-models")
        args.models.mkdir(parents=True, exist_ok=True)
        per_machine = {f"seed {seed}": demo_rates(seed, args.models) for seed in args.demo}
        machines = list(per_machine)
    else:
        args.models = args.models or Path("var/smd-models")
        args.models.mkdir(parents=True, exist_ok=True)
        machines = sorted(p.stem for p in (args.smd / "train").glob("*.npy"))
        per_machine = {m: machine_rates(args.smd, m, args.models) for m in machines}
    print("| variant | " + " | ".join(machines) + " | mean HitRate@100% | mean HitRate@150% |")
    print("| --- " * (len(machines) + 3) + "|")
    for name in VARIANTS:
        pairs = np.array([per_machine[m][name] for m in machines])
        cells = [f"{a:.3f} / {b:.3f}" for a, b in pairs]
        means = pairs.mean(axis=0)
        print(f"| {name} | " + " | ".join(cells) + f" | {means[0]:.3f} | {means[1]:.3f} |")


if __name__ == "__main__":
    main()
