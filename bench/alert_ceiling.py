"""How many events any fixed threshold can alert within a false-alert budget.

A ceiling, not a method: for every file, every threshold on a score is tried (the
labels choose it), and the one that alerts the most labelled events with at most
``--bound`` false alerts per 10,000 normal rows *of that file* is kept; the events
those thresholds alert are pooled per data set. Alerts and false alerts are counted
as ``lvad evaluate`` counts them (``model/evaluation/alarm_quality.py``: runs of
flags merged across gaps of T/2, a false alert more than one window from every
event), on the rows after the training part, on the cached models
(``bench/alarm_cache.py``). The scores:

- ``alarm``: max(unsmoothed, smoothed) step score, what meets the stream's limit;
- ``ranking``: the ranking score (the level floor of two-valued variables and the
  average over T/2, T and 2T steps), what VUS-PR measures;
- ``ranking-gaussian``: the same without the level floor.

The same for the point F1 (``--flagged``): per file, the best F1 of a threshold on the
alarm or the ranking score that flags at most that share of the file's normal rows,
against the best F1 of any threshold on either (the reference of ``lvad evaluate``'s
F1 ratio), as the ratio of their means per data set.

    .venv/bin/python bench/alert_ceiling.py ../shared/data/tsbad-m --cache var/alarm-cache \\
        --nab ../shared/data/nab [--bound 2 5 10] [--flagged 0.01 0.02] [--set NAME=VALUE] \\
        [--train-rows N]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from alarm_cache import Case, add_case_arguments, load_cases
from alarm_variants import ranking, raw_series
from sklearn.metrics import roc_curve

from model.evaluation.alarm_quality import (
    PER_POINTS,
    alert_counts,
    finite_ranks,
    labelled_events,
)
from model.scoring import smooth

TAIL_SHARES = np.logspace(-5, -0.3, 250)  # the upper quantiles tried as thresholds


def scores(case: Case) -> dict[str, np.ndarray]:
    """Each score of the module doc on the rows after the training part."""
    raw = raw_series(case)
    smoothed = smooth(raw, case.detector.config.smoothing, case.window, case.causal)
    rows = slice(case.n_train, None)
    return {
        "alarm": np.fmax(raw.score, smoothed.score)[rows],
        "ranking": ranking(case)[rows],
        "ranking-gaussian": ranking(case, floor=False)[rows],
    }


def candidates(score: np.ndarray, labels: np.ndarray, reach: int) -> np.ndarray:
    """Thresholds worth trying: upper quantiles of the score, and just below the highest
    score from one window before each labelled event to its end (the highest threshold
    at which that stretch still has a flag)."""
    quantiles = np.quantile(score, 1 - TAIL_SHARES)
    tops = [score[max(a - reach, 0) : b].max() for a, b in labelled_events(labels)]
    return np.unique(np.concatenate([quantiles, np.nextafter(np.array(tops), -np.inf)]))


def most_alerted(score: np.ndarray, labels: np.ndarray, reach: int, bound: float) -> int:
    """The most labelled events that a threshold alerts with at most ``bound`` false
    alerts per 10,000 normal rows (flags: score above the threshold)."""
    score = np.nan_to_num(score, nan=-np.inf, posinf=np.finfo(float).max)
    normal = int((labels == 0).sum())
    best = 0
    for threshold in candidates(score, labels, reach):
        false, reached, _ = alert_counts(score > threshold, labels, reach, reach // 2)
        if PER_POINTS * false <= bound * normal:
            best = max(best, reached)
    return best


def f1_within(score: np.ndarray, labels: np.ndarray, shares: list[float]) -> list[float]:
    """The best point F1 of a threshold (flags: score at or above it) flagging at most
    each of ``shares`` of the normal rows, and (last) of any threshold."""
    positive = labels > 0
    false_rate, hit_rate, _ = roc_curve(positive, finite_ranks(score), drop_intermediate=False)
    hits = hit_rate * positive.sum()
    f1 = 2 * hits / (hits + false_rate * (~positive).sum() + positive.sum())
    within = [float(f1[false_rate <= share].max(initial=0.0)) for share in shares]
    return [*within, float(f1.max())]


def f1_ceiling(cases: list[Case], shares: list[float]) -> pd.DataFrame:
    """Per data set: the mean best F1 within each share of normal rows flagged, the
    mean best F1 (either score, per file), and their ratios."""
    rows = []
    for case in cases:
        labels = case.labels[case.n_train :].astype(int)
        both = [f1_within(scores(case)[name], labels, shares) for name in ("alarm", "ranking")]
        best = np.max(both, axis=0)  # the better of the two, per file
        rows.append({"dataset": case.dataset, **dict(zip([*shares, "best"], best, strict=True))})
    table = pd.DataFrame(rows).groupby("dataset").mean()
    for share in shares:
        table[f"ratio@{share:g}"] = table[share] / table["best"]
    return table


def ceiling(cases: list[Case], bounds: list[float]) -> pd.DataFrame:
    rows = []
    for case in cases:
        labels = case.labels[case.n_train :].astype(int)
        events = len(labelled_events(labels))
        for name, score in scores(case).items():
            for bound in bounds:
                reached = most_alerted(score, labels, case.window, bound)
                row = {"dataset": case.dataset, "score": name, "bound": bound}
                rows.append({**row, "reached": reached, "events": events})
    frame = pd.DataFrame(rows)
    table = frame.groupby(["dataset", "bound", "score"], sort=False)[["reached", "events"]].sum()
    table["alert_recall"] = table["reached"] / table["events"]
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_case_arguments(parser)
    parser.add_argument("--bound", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--flagged", type=float, nargs="+", default=[0.01, 0.02])
    args = parser.parse_args()
    cases = load_cases(args)
    f1 = f1_ceiling(cases, args.flagged)
    print("\nbest point F1 per file within a share of normal rows flagged, and its ratio:")
    print(f1.to_string(float_format=lambda v: f"{v:.3f}"))
    table = ceiling(cases, args.bound)
    wide = table.pivot_table(index=["dataset", "bound"], columns="score", values="alert_recall")
    print("\nalert recall of the best threshold per file, false alerts per 10k <= bound:")
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
