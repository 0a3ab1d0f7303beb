"""SMD standard protocol: train on ``train/<machine>.npy``, score ``test/<machine>.npy``.

Reports point-wise best F1 and AUC-PR (no point adjustment), and the
attribution quality against ``interpretation_label/<machine>.txt`` as HitRate@P%:
for a labelled anomalous point with ground-truth columns G, take the
floor(P% x |G|) variables with the largest contributions; its hit rate is
|top ∩ G| / |G|. Three averages, from strictest to the published protocol:

- ``hitrate``: every labelled point, ranked by its own step's contributions;
- ``event_hitrate``: the labelled points inside the detector's events, each ranked
  by its event (what ``/v1/score`` returns as ``events[].top_variables``), and
  ``event_step_hitrate``: the same points ranked by their own steps;
- ``ref_hitrate``: InterFusion's evaluation code (``cal_IPS``): the labelled
  points detected at the threshold of the best point-adjusted F1, each labelled
  segment ranked once from its detected points (every variable's lowest
  log-probability among them), and every detected point counted.

The flags are measured as ``lvad evaluate`` measures them on TSB-AD files
(``model/evaluation/alarm_quality.py``): the test part streamed after the training
part in chunks, the model's stream state carried from chunk to chunk. The test part
is as long as the training part (~23,700 rows a machine, 16 days at one row a
minute), so this is the long run of a server's metrics after training.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from model.config import ModelConfig
from model.detector import Detector, Scored
from model.errors import DataError
from model.evaluation.alarm_quality import best_f1_threshold, flags_line, summarize
from model.evaluation.evaluate import CHUNK, stream_quality, write_rows
from model.events import Event

Segments = list[tuple[int, int, list[int]]]


def read_interpretation(path: Path) -> Segments:
    """Lines ``start-end:c1,c2`` -> (start, end inclusive, 0-based columns)."""
    segments = []
    for line in path.read_text().split():
        span, _, columns = line.partition(":")
        start, _, end = span.partition("-")
        segments.append((int(start), int(end), [int(c) - 1 for c in columns.split(",") if c]))
    return segments


def mean_hit_rate(ranked: Iterable[tuple[np.ndarray, list[int]]], percent: float) -> float:
    """Mean over (shares (D,), true columns) pairs of |top floor(P|G|) ∩ G| / |G|."""
    rates = []
    for shares, truth in ranked:
        k = int(np.floor(percent / 100 * len(truth)))
        top = np.argsort(-shares, kind="stable")[:k]
        rates.append(len(set(top.tolist()) & set(truth)) / len(truth))
    return float(np.mean(rates)) if rates else float("nan")


def labelled_points(segments: Segments, n: int) -> Iterable[tuple[int, list[int]]]:
    for start, end, truth in segments:
        for t in range(start, min(end, n - 1) + 1):
            yield t, truth


def hit_rate(shares: np.ndarray, segments: Segments, percent: float) -> float:
    """Every labelled point, ranked by its own row of ``shares`` (n, D)."""
    return mean_hit_rate(
        ((shares[t], truth) for t, truth in labelled_points(segments, len(shares))), percent
    )


def points_in_events(
    events: list[Event], segments: Segments, n: int
) -> list[tuple[int, list[int], int]]:
    """The labelled points inside events: (point, true columns, index of its event)."""
    owner = np.full(n, -1)
    for i, event in enumerate(events):
        owner[event.start : event.end] = i
    return [(t, truth, owner[t]) for t, truth in labelled_points(segments, n) if owner[t] >= 0]


def event_hit_rate(
    events: list[Event], shares: np.ndarray, segments: Segments, percent: float
) -> tuple[float, float, int]:
    """The labelled points inside events: their mean hit rate ranked by their event, the
    same ranked by their own rows of ``shares`` (n, D), and how many points there are."""
    inside = points_in_events(events, segments, len(shares))
    by_event = mean_hit_rate(((events[i].contributions, g) for _, g, i in inside), percent)
    by_step = mean_hit_rate(((shares[t], g) for t, g, _ in inside), percent)
    return by_event, by_step, len(inside)


def point_adjusted_threshold(score: np.ndarray, labels: np.ndarray) -> float:
    """The threshold of the best point-adjusted F1 (a labelled segment counts as found,
    all of it, once its highest score is reached), found as InterFusion's
    ``get_best_f1`` finds it: candidates are normal points' scores and segments' maxima."""
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], labels, [0]])))
    # (series position, score, points, anomalous) in series order, as get_best_f1 lists
    # them; the stable sort by score then breaks ties the same way
    candidates = [(int(t), float(score[t]), 1, False) for t in np.flatnonzero(labels == 0)]
    candidates += [(a, float(score[a:b].max()), b - a, True) for a, b in bounds.reshape(-1, 2)]
    candidates.sort(key=lambda item: item[0])
    candidates.sort(key=lambda item: -item[1])
    total, flagged, found = int(labels.sum()), 0, 0
    best, threshold = -1.0, np.inf
    for _, value, count, anomalous in candidates:
        flagged += count
        found += count if anomalous else 0
        precision, recall = found / (flagged + 1e-5), found / (total + 1e-5)
        f1 = 2 * precision * recall / (precision + recall + 1e-5)
        if f1 > best:
            best, threshold = f1, value
    return threshold


def reference_hit_rate(
    log_prob: np.ndarray,
    baseline: np.ndarray,
    score: np.ndarray,
    labels: np.ndarray,
    segments: Segments,
    percent: float,
) -> tuple[float, int]:
    """InterFusion's protocol (see the module doc); and how many points it counts.

    A segment's variables are ranked by their lowest log-probability among its
    detected points, each less its median on normal data (``baseline``), unclipped,
    so the order below the median is the log-probabilities' own, as in ``cal_IPS``.
    """
    detected = (labels > 0) & (score >= point_adjusted_threshold(score, labels))
    ranked = []
    for start, end, truth in segments:
        points = np.flatnonzero(detected[start : end + 1]) + start
        if len(points):
            surprise = -np.fmin.reduce(log_prob[points], axis=0) - baseline
            ranked += [(surprise, truth)] * len(points)
    return mean_hit_rate(ranked, percent), len(ranked)


def best_f1(score: np.ndarray, labels: np.ndarray) -> float:
    return best_f1_threshold(score, labels)[0]


def attribution_rates(
    detector: Detector, scored: Scored, labels: np.ndarray, segments: Segments
) -> dict[str, float | int]:
    """The three hit rates at 100 % and 150 % (see the module doc), and their point counts."""
    events = detector.events(scored)
    rates: dict[str, float | int] = {}
    for p in (100, 150):
        rates[f"hitrate@{p}"] = hit_rate(scored.contributions, segments, p)
    for p in (100, 150):
        rates[f"event_hitrate@{p}"], rates[f"event_step_hitrate@{p}"], rates["event_points"] = (
            event_hit_rate(events, scored.contributions, segments, p)
        )
    for p in (100, 150):
        rates[f"ref_hitrate@{p}"], rates["ref_points"] = reference_hit_rate(
            scored.log_prob, detector.baseline, scored.score, labels, segments, p
        )
    return rates


def evaluate_smd(
    smd_dir: str | Path, out: str | Path, config: ModelConfig, chunk: int = CHUNK
) -> pd.DataFrame:
    """The ranking and attribution table per machine (``smd-summary.csv``); the flags of
    the streamed test parts go to ``smd-flags.csv``."""
    smd_dir, out = Path(smd_dir), Path(out)
    machines = sorted(p.stem for p in (smd_dir / "train").glob("*.npy"))
    if not machines:
        raise DataError(f"no train/<machine>.npy files in {smd_dir}")
    out.mkdir(parents=True, exist_ok=True)
    rows, flag_rows = [], []
    for machine in machines:
        started = time.perf_counter()
        train = np.load(smd_dir / "train" / f"{machine}.npy").astype(np.float64)
        test = np.load(smd_dir / "test" / f"{machine}.npy").astype(np.float64)
        labels = np.load(smd_dir / "labels" / f"{machine}.npy").astype(int)
        detector = Detector.fit(train, config)
        scored = detector.score(test)
        segments = read_interpretation(smd_dir / "interpretation_label" / f"{machine}.txt")
        quality, stream = stream_quality(
            detector,
            np.concatenate([train, test]),
            np.concatenate([np.zeros(len(train), int), labels]),
            len(train),
            chunk,
            scored.score,
        )
        flag_rows.append({"machine": machine, **quality})
        write_rows(out / f"{machine}.csv", scored.score, stream, 0)
        rows.append(
            {
                "machine": machine,
                "best_f1": best_f1(scored.score, labels),
                "auc_pr": float(average_precision_score(labels, scored.score)),
                **attribution_rates(detector, scored, labels, segments),
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
            ),
            flush=True,
        )
        print(f"{machine} streamed: {flags_line(quality)}", flush=True)
    table = pd.DataFrame(rows)
    print(
        "\nSMD standard protocol, mean over machines (F1 and AUC-PR point-wise, no point "
        "adjustment; ref_hitrate: InterFusion's interpretation protocol):"
    )
    print(table.drop(columns=["machine"]).mean().to_string(float_format="%.3f"))
    table.to_csv(out / "smd-summary.csv", index=False)
    flags = pd.DataFrame(flag_rows)
    flags.to_csv(out / "smd-flags.csv", index=False)
    print("\nFlags of the streamed test parts (normal points flagged: mean and median over")
    print("machines; alerts pooled):")
    summary = summarize(flags, None).drop(columns="group").iloc[0].astype(float)
    print(summary.to_string(float_format="%.3f"))
    return table
