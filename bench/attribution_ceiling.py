"""Where attribution's HitRate is lost: in the per-variable measure, or in the span of
steps it is taken over.

Every labelled point is ranked by each variable's largest value of a measure over
a span of steps around it, and HitRate@150% is averaged as in ``model/evaluation/smd.py``.

Measures:

- ``excess surprise (shipped)``: −log p(x_t|z), smoothed over T, less its median
  on the validation split: the product's contributions before they are normalized;
- ``deviation (no model)``: |x| in training z-units, how far the variable is from
  its training mean in training standard deviations.

Spans:

- ``own step``: the point alone (the product's per-step ``top_variables``);
- ``±T``, ``±2T``: the steps within one or two windows of it, centred;
- ``its event``: the detector's event that holds it (``events[].top_variables``);
  only the labelled points inside events count, so this column's points differ;
- ``its event at the best F1``: the same, with events cut from the steps whose
  score reaches the threshold of the best point-wise F1 instead of the
  detector's flags. That threshold comes from the labels: the events of the best
  threshold this score allows, a ceiling for better flags;
- ``its labelled segment``: the labelled segment that holds it. The span comes
  from the labels, which no detector has: a ceiling, not a method.

The demo (development) and SMD are both scored, SMD with the model seeds given
(models cached as ``bench/event_attribution.py`` caches them).

    .venv/bin/python bench/attribution_ceiling.py --models var/attribution-current \\
        --seeds 1 2 3 4 5 6 7 8 --smd ../shared/data/smd --model-seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from event_attribution import Case, demo_case, smd_case
from scipy.ndimage import maximum_filter1d

from model.config import ModelConfig
from model.detector import Scored
from model.evaluation.smd import best_f1_threshold, labelled_points, mean_hit_rate, points_in_events
from model.events import Event, find_events

SPANS = ("own step", "±T", "±2T", "its event", "its event at the best F1", "its labelled segment")


def measures(case: Case, scored: Scored) -> dict[str, np.ndarray]:
    det = case.det
    return {
        "excess surprise (shipped)": -scored.log_prob - det.baseline,
        "deviation (no model)": np.abs(det.normalize(case.values).astype(np.float64)),
    }


def best_f1_events(score: np.ndarray, labels: np.ndarray, max_gap: int) -> list[Event]:
    """Runs of steps whose score reaches the threshold of the best point-wise F1,
    merged as the detector merges its flags (only their spans are used)."""
    finite = np.nan_to_num(score, nan=-np.inf)
    flags = finite >= best_f1_threshold(finite, labels)[1]
    return [Event(a, b, a, np.zeros(0)) for a, b in find_events(flags, max_gap)]


def span_rates(case: Case, scored: Scored, measure: np.ndarray) -> dict[str, float]:
    """HitRate@150% of every span for one measure (n, D); higher = more at fault."""
    det, n = case.det, len(case.values)
    measure = np.nan_to_num(measure, nan=-np.inf)
    points = list(labelled_points(case.segments, n))
    rates = {"own step": mean_hit_rate(((measure[t], g) for t, g in points), 150)}
    for name, half in (("±T", det.window), ("±2T", 2 * det.window)):
        widest = maximum_filter1d(measure, size=2 * half + 1, axis=0, mode="nearest")
        rates[name] = mean_hit_rate(((widest[t], g) for t, g in points), 150)
    for name, events in (
        ("its event", det.events(scored)),
        ("its event at the best F1", best_f1_events(scored.score, case.labels, det.window // 2)),
    ):
        per_event = [measure[e.start : e.end].max(axis=0) for e in events]
        inside = points_in_events(events, case.segments, n)
        rates[name] = mean_hit_rate(((per_event[i], g) for _, g, i in inside), 150)
    per_segment = [
        (measure[start : min(end, n - 1) + 1].max(axis=0), truth)
        for start, end, truth in case.segments
        for _ in range(start, min(end, n - 1) + 1)
    ]
    rates["its labelled segment"] = mean_hit_rate(per_segment, 150)
    return rates


def report(title: str, cases: dict[str, Case]) -> None:
    table = {}
    for name, case in cases.items():
        scored = case.det.score(case.values)
        table[name] = {m: span_rates(case, scored, v) for m, v in measures(case, scored).items()}
    print(f"\n{title}, HitRate@150% (mean of {len(cases)} models)")
    print("| measure | " + " | ".join(SPANS) + " |\n" + "| --- " * (len(SPANS) + 1) + "|")
    for measure in next(iter(table.values())):
        cells = [np.nanmean([table[c][measure][span] for c in table]) for span in SPANS]
        print(f"| {measure} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--smd", type=Path, help="SMD directory")
    parser.add_argument("--model-seeds", type=int, nargs="*", help="SMD models' training seeds")
    parser.add_argument("--models", type=Path, default=Path("var/attribution-models"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    config = ModelConfig()
    if args.seeds:
        demo = {f"seed {s}": demo_case(s, args.models, config) for s in args.seeds}
        report("demo data (development)", demo)
    if args.smd is not None:
        machines = sorted(p.stem for p in (args.smd / "train").glob("*.npy"))
        seeds = args.model_seeds if args.model_seeds else [None]
        smd = {
            f"{m} s{seed}": smd_case(args.smd, m, args.models, config, seed)
            for seed in seeds
            for m in machines
        }
        report("SMD", smd)


if __name__ == "__main__":
    main()
