"""Events: runs of anomalous steps, and the variables at fault over a whole run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.scoring import contributions


def find_events(flags: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``flags``; runs closer than ``max_gap`` merge."""
    flags = np.asarray(flags, dtype=bool)
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class Event:
    """Steps [start, end) flagged as one anomaly, and who is at fault over all of them."""

    start: int
    end: int  # exclusive
    peak: int  # the step with the highest alarm score
    contributions: np.ndarray  # (D,) shares of the run's excess surprise, sum 1 (or 0)


def anomaly_events(
    is_anomaly: np.ndarray,
    alarm_score: np.ndarray,
    log_prob: np.ndarray,
    baseline: np.ndarray,
    max_gap: int,
) -> list[Event]:
    """Runs of flagged steps (merged across gaps of up to ``max_gap`` steps), each ranked
    as a whole.

    A variable's share in an event comes from its *lowest* log-probability over
    the run (its largest excess surprise above ``baseline``), the segment-wise
    aggregation of InterFusion's interpretation protocol: a variable at fault for
    part of the event counts fully, and one that drifts a little throughout does
    not outrank it. ``log_prob`` is (n, D); NaN steps (causal warm-up) are skipped.
    """
    events = []
    for start, end in find_events(is_anomaly, max_gap):
        peak = start + int(np.argmax(np.nan_to_num(alarm_score[start:end], nan=-np.inf)))
        worst = np.fmin.reduce(log_prob[start:end], axis=0)  # fmin: NaN only where all are
        events.append(Event(start, end, peak, contributions(worst, baseline)))
    return events
