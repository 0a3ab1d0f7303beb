"""Events: runs of anomalous steps, and the variables at fault over a whole run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.scoring import contributions


def merged_runs(flags: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True in each row of ``flags`` (N, n), merged across gaps of up to
    ``max_gap`` False steps: (row, start, end exclusive) arrays, in row-major order."""
    rows, steps = flags.shape
    padded = np.zeros((rows, steps + 2), dtype=np.int8)
    padded[:, 1:-1] = flags
    edge_rows, edges = np.nonzero(np.diff(padded, axis=1))  # start, end, start, ... per row
    run_rows, starts, ends = edge_rows[0::2], edges[0::2], edges[1::2]
    if not len(starts):
        return run_rows, starts, ends
    opens = np.ones(len(starts), dtype=bool)  # does run i start a new merged run?
    opens[1:] = (run_rows[1:] != run_rows[:-1]) | (starts[1:] - ends[:-1] > max_gap)
    first = np.flatnonzero(opens)
    last = np.append(first[1:], len(starts)) - 1
    return run_rows[first], starts[first], ends[last]


def find_events(flags: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``flags``; runs up to ``max_gap`` apart merge."""
    _, starts, ends = merged_runs(np.asarray(flags, dtype=bool)[None], max_gap)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass(frozen=True)
class Event:
    """Steps [start, end) flagged as one anomaly, and who is at fault over all of them."""

    start: int
    end: int  # exclusive
    peak: int  # the flagged step with the highest alarm score
    contributions: np.ndarray  # (D,) shares of the run's excess surprise, sum 1 (or 0)


def anomaly_events(
    is_anomaly: np.ndarray,
    alarm_score: np.ndarray,
    log_prob: np.ndarray,
    baseline: np.ndarray,
    max_gap: int,
) -> list[Event]:
    """Runs of flagged steps (merged across gaps of up to ``max_gap`` unflagged steps),
    each ranked as a whole.

    A variable's share in an event comes from its *lowest* log-probability over
    the run (its largest excess surprise above ``baseline``), the segment-wise
    aggregation of InterFusion's interpretation protocol: a variable at fault for
    part of the event counts fully, and one that drifts a little throughout does
    not outrank it. Arrays are (n,), (n,), (n, D); NaN steps (causal warm-up) are
    skipped.
    """
    return batch_events(is_anomaly[None], alarm_score[None], log_prob[None], baseline, max_gap)[0]


def batch_events(
    is_anomaly: np.ndarray,
    alarm_score: np.ndarray,
    log_prob: np.ndarray,
    baseline: np.ndarray,
    max_gap: int,
) -> list[list[Event]]:
    """``anomaly_events`` of every row of (N, n), (N, n), (N, n, D) arrays at once."""
    rows, steps = is_anomaly.shape
    event_rows, event_starts, event_ends = merged_runs(is_anomaly, max_gap)
    events: list[list[Event]] = [[] for _ in range(rows)]
    if not len(event_starts):
        return events
    # every variable's lowest log-probability over each event, from the flattened rows
    # (fmin skips NaN; a NaN row at the end keeps every bound a valid index)
    flat = np.concatenate([log_prob.reshape(rows * steps, -1), np.nan * log_prob[:1, :1, :][0]])
    offsets = event_rows * steps
    bounds = np.stack([offsets + event_starts, offsets + event_ends], axis=1).ravel()
    shares = contributions(np.fmin.reduceat(flat, bounds, axis=0)[0::2], baseline)
    alarm = np.where(is_anomaly, np.nan_to_num(alarm_score, nan=-np.inf), -np.inf)
    for row, start, end, share in zip(
        event_rows.tolist(), event_starts.tolist(), event_ends.tolist(), shares, strict=True
    ):
        peak = start + int(np.argmax(alarm[row, start:end]))
        events[row].append(Event(start, end, peak, share))
    return events
