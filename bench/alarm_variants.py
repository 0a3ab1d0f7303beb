"""Alarm and scoring variants compared on cached models (``bench/alarm_cache.py``).

Every variant maps a case's cached per-step results to a ranking score (all rows)
and flags (the rows after the training part); the table gives, per data set, the
ranking (VUS-PR, only with ``--vus``: ~2 s a file) and the flag and alert measures
of ``model/evaluation/alarm_quality.py``, as ``lvad evaluate`` reports them.

    .venv/bin/python bench/alarm_variants.py ../shared/data/tsbad-m --cache var/alarm-cache \\
        [--nab ../shared/data/nab] [--train-rows 500] [--vus] [--only NAME ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from alarm_cache import Case, nab_cases, tsbad_cases

from app.cli import parse_overrides
from model.config import ModelConfig
from model.evaluation.alarm_quality import flag_quality, summarize
from model.evaluation.metrics import detection_metrics
from model.scoring import SeriesScores, smooth, step_scores
from model.stream import advance, start_stream


@dataclass
class Outcome:
    score: np.ndarray  # (n,) ranking score of every row
    alarm: np.ndarray  # (n - n_train,) alarm score after the training part
    flags: np.ndarray  # (n - n_train,)
    gap: float = 0.5  # alerts: runs merged across gaps of up to this many windows


Variant = Callable[[Case], Outcome]


def raw_series(case: Case) -> SeriesScores:
    warm = np.arange(len(case.kl)) < case.window - 1
    return SeriesScores(
        case.log_prob, case.kl, step_scores(case.log_prob, case.kl, case.window), warm
    )


def shipped(case: Case) -> Outcome:
    """Today's decision: alarm = max(raw, smoothed) against the fixed POT threshold."""
    raw = raw_series(case)
    smoothed = smooth(raw, case.detector.config.smoothing, case.window, case.causal)
    alarm = np.fmax(raw.score, smoothed.score)[case.n_train :]
    flags = np.nan_to_num(alarm, nan=-np.inf) > case.detector.threshold.value
    return Outcome(smoothed.score, alarm, flags)


def alarm_scores(case: Case, validation: bool, alarm: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """(ranking score, alarm score = max(raw, smoothed) or ``alarm`` = "smoothed") of the
    rows or of the validation tail."""
    log_prob, kl = (case.val_log_prob, case.val_kl) if validation else (case.log_prob, case.kl)
    if validation and case.causal:
        log_prob, kl = case.val_last_log_prob, case.val_last_kl
    warm = np.zeros(len(kl), dtype=bool)
    raw = SeriesScores(log_prob, kl, step_scores(log_prob, kl, case.window), warm)
    smoothed = smooth(raw, case.detector.config.smoothing, case.window, case.causal)
    if alarm == "smoothed":
        return smoothed.score, smoothed.score
    return smoothed.score, np.fmax(raw.score, smoothed.score)


def streamed(
    risk: float,
    depth: int,
    window: int,
    alarm: str = "max",
    gap: float = 0.5,
) -> Variant:
    """The alarm score decided by a stream state started on the validation alarm scores;
    ``depth``, ``window`` and ``gap`` in model windows."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False, alarm)
        w = case.window
        start = start_stream(alarm_scores(case, True, alarm)[1], risk, depth * w, window * w)
        result = advance(start, scores[case.n_train :])
        return Outcome(score, scores[case.n_train :], result.flags, gap)

    return variant


VARIANTS: dict[str, Variant] = {
    "shipped": shipped,
    **{
        f"q{risk:g} d{depth} w{window}": streamed(risk, depth, window)
        for risk in (1e-3, 1e-4)
        for depth in (0, 1, 4, 10)
        for window in (0, 4, 10, 30)
    },
    **{
        f"{alarm} q{risk:g} w{window} gap{gap:g}": streamed(risk, 0, window, alarm, gap)
        for alarm in ("max", "smoothed")
        for risk in (1e-3, 1e-4)
        for window in (4, 10)
        for gap in (0.5, 2)
    },
}


def measure(case: Case, variant: Variant, vus: bool) -> dict:
    out = variant(case)
    labels = case.labels[case.n_train :]
    row = {"file": case.name, "dataset": case.dataset}
    gap = int(out.gap * case.window)
    row.update(flag_quality(out.alarm, out.flags, labels, case.window, gap))
    if vus:
        score = np.nan_to_num(out.score, nan=np.nanmin(out.score))
        row["vus_pr"] = detection_metrics(score, case.labels, case.slide)["VUS-PR"]
    return row


def compare(cases: list[Case], names: list[str], vus: bool) -> pd.DataFrame:
    tables = []
    for name in names:
        frame = pd.DataFrame([measure(case, VARIANTS[name], vus) for case in cases])
        table = summarize(frame, "dataset")
        if vus:
            table.insert(2, "vus_pr", frame.groupby("dataset")["vus_pr"].mean().to_numpy())
        table.insert(0, "variant", name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, nargs="?")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--nab", type=Path)
    parser.add_argument("--train-rows", type=int)
    parser.add_argument("--vus", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="variants (prefixes)")
    args = parser.parse_args()
    config = ModelConfig().replace(**parse_overrides(args.set))
    cases = []
    if args.directory:
        cases += tsbad_cases(args.directory, args.cache, config, args.train_rows)
    if args.nab:
        cases += nab_cases(args.nab, args.cache, config)
    names = [name for name in VARIANTS if any(name.startswith(p) for p in args.only)]
    table = compare(cases, names, args.vus)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
