"""Event attribution variants: developed on the demo data, then tested on SMD.

The labelled points inside the detector's events (``Detector.events``) are ranked
nine ways, and HitRate@100% / @150% is averaged as in ``model/evaluation/smd.py``:

- ``step``: each point by its own step's contributions (per-step ``top_variables``);
- ``event`` (shipped): by its event, each variable's lowest log-probability in it;
- ``event, local level``: the same, over the higher of each variable's validation
  median and its median in the 2T steps ending T before the event (what changed
  at the event rather than what has been high for a while);
- ``counterfactual``: by how much the score of up to 8 windows across the event
  falls when one variable is replaced by its reconstruction;
- ``event, series level``: the shipped ranking over the higher of each variable's
  validation median and its median over the whole scored series (the level of
  this series, drift included);
- ``event, summed excess``: by its event, each variable's excess surprise (over its
  validation median) summed over the event's steps, not its largest;
- ``event, peak step``: by its event's peak step's contributions;
- ``event, unsmoothed``: the shipped ranking from the per-step log-probabilities
  before the moving average (the mean over the covering windows only), so a
  variable's few faulty steps are not averaged with the normal ones around them;
- ``point, local min``: each point by each variable's lowest log-probability
  within half a window of it, inside its event (the event ranking made local).

The demo data (``lvad demo``, one seed per data set) labels the root variable of
every injected event and its dependents, so variants are compared there first;
SMD's ``interpretation_label`` is the test, used once per variant. Models are
trained with the default configuration and cached under ``--models``.
``--model-seeds`` trains SMD models with other seeds (cached as
``<machine>-s<seed>.lvad``) and averages over machines and seeds: one model per
machine leaves the test at the mercy of a few labelled segments.
``--set NAME=VALUE`` trains the models with another parameter (as ``lvad evaluate``
does; give them their own ``--models`` directory).

Two more rows rank the labelled segments by InterFusion's protocol
(``model.evaluation.smd.reference_hit_rate``, its own points counted in brackets) from the
smoothed log-probabilities (shipped) and from the unsmoothed ones.

    .venv/bin/python bench/event_attribution.py --seeds 1 2 3 4 5 6 7 8 \\
        --smd ../shared/data/smd [--model-seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.config import ModelConfig
from model.detector import Detector, Scored
from model.evaluation.demo import DEMO_FEATURES, make_demo
from model.evaluation.smd import (
    Segments,
    mean_hit_rate,
    points_in_events,
    read_interpretation,
    reference_hit_rate,
)
from model.events import Event
from model.scoring import contributions, score_series


@dataclass(frozen=True)
class Series:
    """The scored series as the variants see it, beside ``Scored``."""

    normalized: np.ndarray  # (n, D) in training z-units
    step_log_prob: np.ndarray  # (n, D) log-probabilities before the moving average


@dataclass(frozen=True)
class Case:
    """One scored test series with its labels."""

    det: Detector
    values: np.ndarray  # (n, D) original units
    segments: Segments  # labelled segments and their variables at fault
    labels: np.ndarray  # (n,) 1 on labelled points


Variant = Callable[[Detector, Scored, Series, Event], np.ndarray]  # -> shares (D,)
PointVariant = Callable[[Detector, Scored, int, Event], np.ndarray]  # point t -> shares (D,)


def local_level(det: Detector, scored: Scored, series: Series, event: Event) -> np.ndarray:
    window = det.window
    before = -scored.log_prob[max(0, event.start - 3 * window) : max(0, event.start - window)]
    level = det.baseline
    if len(before) >= window // 2:
        level = np.maximum(level, np.median(before, axis=0))
    return contributions(np.fmin.reduce(scored.log_prob[event.start : event.end], axis=0), level)


@torch.inference_mode()
def counterfactual(det: Detector, scored: Scored, series: Series, event: Event):
    normalized = series.normalized
    window, (n, d) = det.window, normalized.shape
    first = min(max(0, event.start - window // 2), n - window)
    last = max(first, min(n - window, event.end - 1 - window // 2))
    starts = np.unique(np.linspace(first, last, 8).round().astype(int))
    x = torch.as_tensor(np.stack([normalized[s : s + window] for s in starts]), dtype=torch.float32)
    mu, _ = det.net.encode(x)
    recon, _ = det.net.decode(mu, window)  # (K, T, D)
    copies = x.unsqueeze(1).repeat(1, d, 1, 1)  # (K, D, T, D): copy j has variable j replaced
    columns = torch.arange(d)
    copies[:, columns, :, columns] = recon.permute(2, 0, 1)
    log_prob, kl = det.engine(x)
    base = -log_prob.sum((1, 2)) + kl  # (K,)
    log_prob, kl = det.engine(copies.flatten(0, 1))
    replaced = (-log_prob.sum((1, 2)) + kl).view(len(starts), d)
    drop = np.clip((base[:, None] - replaced).mean(0).numpy(), 0.0, None)
    return drop / drop.sum() if drop.sum() > 0 else drop


def series_level(det: Detector, scored: Scored, series: Series, event: Event):
    level = np.maximum(det.baseline, np.nanmedian(-scored.log_prob, axis=0))
    return contributions(np.fmin.reduce(scored.log_prob[event.start : event.end], axis=0), level)


def summed_excess(det: Detector, scored: Scored, series: Series, event: Event):
    excess = np.clip(-scored.log_prob[event.start : event.end] - det.baseline, 0.0, None)
    total = np.nan_to_num(excess).sum(axis=0)
    return total / total.sum() if total.sum() > 0 else total


def peak_step(det: Detector, scored: Scored, series: Series, event: Event):
    return scored.contributions[event.peak]


def unsmoothed(det: Detector, scored: Scored, series: Series, event: Event):
    worst = np.fmin.reduce(series.step_log_prob[event.start : event.end], axis=0)
    return contributions(worst, det.baseline)


def local_min(det: Detector, scored: Scored, t: int, event: Event) -> np.ndarray:
    lo, hi = max(event.start, t - det.window // 2), min(event.end, t + det.window // 2 + 1)
    return contributions(np.fmin.reduce(scored.log_prob[lo:hi], axis=0), det.baseline)


VARIANTS: dict[str, Variant | None] = {
    "step": None,
    "event (shipped)": lambda det, scored, series, event: event.contributions,
    "event, local level": local_level,
    "counterfactual": counterfactual,
    "event, series level": series_level,
    "event, summed excess": summed_excess,
    "event, peak step": peak_step,
    "event, unsmoothed": unsmoothed,
}
POINT_VARIANTS: dict[str, PointVariant] = {"point, local min": local_min}
REFERENCE: dict[str, Callable[[Scored, Series], np.ndarray]] = {
    "InterFusion's protocol, smoothed (shipped)": lambda scored, series: scored.log_prob,
    "InterFusion's protocol, unsmoothed": lambda scored, series: series.step_log_prob,
}


def rates(case: Case) -> dict[str, tuple]:
    """Per variant: (HitRate@100%, HitRate@150%, points) over the labelled points in events;
    and by InterFusion's protocol from the smoothed and the unsmoothed log-probabilities."""
    det, values, segments = case.det, case.values, case.segments
    scored = det.score(values)
    normalized = det.normalize(values)
    series = Series(normalized, score_series(det.engine, normalized).log_prob)
    events = det.events(scored)
    inside = points_in_events(events, segments, len(values))
    out = {}
    for name, variant in VARIANTS.items():
        if variant is None:
            ranked = [(scored.contributions[t], truth) for t, truth, _ in inside]
        else:
            shares = [variant(det, scored, series, event) for event in events]
            ranked = [(shares[i], truth) for _, truth, i in inside]
        out[name] = (mean_hit_rate(ranked, 100), mean_hit_rate(ranked, 150), len(inside))
    for name, point_variant in POINT_VARIANTS.items():
        ranked = [(point_variant(det, scored, t, events[i]), truth) for t, truth, i in inside]
        out[name] = (mean_hit_rate(ranked, 100), mean_hit_rate(ranked, 150), len(inside))
    for name, log_prob in REFERENCE.items():
        pair = [
            reference_hit_rate(
                log_prob(scored, series), det.baseline, scored.score, case.labels, segments, p
            )
            for p in (100, 150)
        ]
        out[name] = (pair[0][0], pair[1][0], pair[0][1])
    return out


def cached(path: Path, train: np.ndarray, config: ModelConfig) -> Detector:
    if path.exists():
        return Detector.load(path)
    det = Detector.fit(train, config)
    det.save(path)
    return det


def demo_segments(events: list[dict]) -> Segments:
    """The demo's events as labelled segments: (start, end inclusive, columns at fault)."""
    return [
        (e["start"], e["end"] - 1, [DEMO_FEATURES.index(v) for v in e["variables"]]) for e in events
    ]


def demo_case(seed: int, models: Path, config: ModelConfig) -> Case:
    demo = make_demo(seed)
    det = cached(models / f"demo-{seed}.lvad", demo.train[DEMO_FEATURES].to_numpy(float), config)
    test = demo.test[DEMO_FEATURES].to_numpy(float)
    return Case(det, test, demo_segments(demo.events), demo.test["label"].to_numpy())


def smd_case(
    smd: Path, machine: str, models: Path, config: ModelConfig, seed: int | None = None
) -> Case:
    name = machine if seed is None else f"{machine}-s{seed}"
    train = np.load(smd / "train" / f"{machine}.npy")
    det = cached(
        models / f"{name}.lvad", train, config if seed is None else config.replace(seed=seed)
    )
    segments = read_interpretation(smd / "interpretation_label" / f"{machine}.txt")
    labels = np.load(smd / "labels" / f"{machine}.npy").astype(int)
    return Case(det, np.load(smd / "test" / f"{machine}.npy").astype(np.float64), segments, labels)


def report(title: str, per_case: dict[str, dict[str, tuple]]) -> None:
    cases = list(per_case)
    print(f"\n{title}\n| variant | " + " | ".join(cases) + " | mean @100% | mean @150% |")
    print("| --- " * (len(cases) + 3) + "|")
    for name in [*VARIANTS, *POINT_VARIANTS, *REFERENCE]:
        cells = [per_case[c][name] for c in cases]
        means = np.nanmean([cell[:2] for cell in cells], axis=0)
        text = [f"{a:.3f} / {b:.3f} ({n})" for a, b, n in cells]
        print(f"| {name} | " + " | ".join(text) + f" | {means[0]:.3f} | {means[1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--smd", type=Path, help="SMD directory: the test, once per variant")
    parser.add_argument(
        "--model-seeds", type=int, nargs="*", help="SMD models trained with these seeds"
    )
    parser.add_argument("--models", type=Path, default=Path("var/attribution-models"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="model parameter of the models trained (give them their own --models)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.with_overrides(dict(pair.split("=", 1) for pair in args.set), text=True)
    demo = {f"seed {s}": rates(demo_case(s, args.models, config)) for s in args.seeds}
    report("demo data (development), HitRate@100% / @150% (points in events)", demo)
    if args.smd is not None:
        machines = sorted(p.stem for p in (args.smd / "train").glob("*.npy"))
        seeds = args.model_seeds if args.model_seeds else [None]
        smd = {
            m if seed is None else f"{m} s{seed}": rates(
                smd_case(args.smd, m, args.models, config, seed)
            )
            for seed in seeds
            for m in machines
        }
        report("SMD (test), HitRate@100% / @150% (points in events)", smd)


if __name__ == "__main__":
    main()
