"""How usable the flags are: the measures a monitoring team acts on.

All of them take per-point ``flags`` (what ``is_anomaly`` says) and ``labels``
(1 = anomalous) of the scored part of a series, i.e. after the training part:

* ``normal_flagged``: the share of label-0 points that are flagged;
* ``point_f1`` of the flags, and ``best_f1``: the best point F1 that one threshold on
  the same score reaches (chosen with the labels, so a reference, not a method); the
  flags of a stream need the alarm score above its limit and the ranking score above
  its confirmation level, so with the ``ranking`` score given, the better of a
  threshold on either (flags that need both, or a moving limit, can pass it);
* ``event_recall``: the share of labelled events (runs of label 1) with a flagged point;
* alerts: an alert is the start of a run of flagged points, runs merged across gaps
  of up to ``max_gap`` unflagged points (the service's event grouping, half a window),
  i.e. what pages someone. An alert is *false* when it starts outside every labelled
  event and not within ``reach`` points (one window) of one; ``false_alerts`` is
  counted per 10,000 normal points. An event is *reached* when an alert starts
  inside it or within ``reach`` points before it; ``alert_recall`` is the share of
  labelled events reached.

Per data set (``summarize``): normal points flagged as the mean and the median over
files, point F1 and best F1 as means over files (and the ratio of the two means),
event recall, alert recall and false alerts pooled over all the files' points, and
the severity's calibration: the share of normal points whose severity is above 0.99
(0.999), 1 % (0.1 %) if severity is 1 - a calibrated exceedance probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from model.events import find_events

PER_POINTS = 10_000  # false alerts are counted per this many normal points
SEVERITY_LEVELS = {"severity_99": 0.99, "severity_999": 0.999}


def labelled_events(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of label 1."""
    return find_events(np.asarray(labels) > 0)


def alert_starts(flags: np.ndarray, max_gap: int) -> np.ndarray:
    """Where alerts start: the first point of each run of flags (merged across gaps)."""
    return np.array([start for start, _ in find_events(np.asarray(flags, bool), max_gap)], int)


def point_f1(flags: np.ndarray, labels: np.ndarray) -> float:
    flags, labels = np.asarray(flags, bool), np.asarray(labels) > 0
    hits = int((flags & labels).sum())
    if hits == 0:
        return 0.0
    return 2 * hits / (int(flags.sum()) + int(labels.sum()))


def best_f1_threshold(score: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best point F1 over all thresholds (score >= it), and that threshold.

    NaN scores (causal warm-up) rank lowest, +inf highest."""
    score = finite_ranks(score)
    precision, recall, thresholds = precision_recall_curve(np.asarray(labels) > 0, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best = int(np.argmax(f1))  # the curve's last point (recall 0) has no threshold
    return float(f1[best]), float(thresholds[best])


def finite_ranks(score: np.ndarray) -> np.ndarray:
    """``score`` with NaN below and +-inf beyond every finite value, order kept."""
    score = np.asarray(score, dtype=float)
    finite = score[np.isfinite(score)]
    low, high = (finite.min() - 1, finite.max() + 1) if finite.size else (0.0, 1.0)
    return np.nan_to_num(score, nan=low - 1, neginf=low, posinf=high)


def event_recall(flags: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(labelled events with at least one flagged point, labelled events)."""
    events = labelled_events(labels)
    flags = np.asarray(flags, bool)
    return sum(bool(flags[a:b].any()) for a, b in events), len(events)


def alert_counts(
    flags: np.ndarray, labels: np.ndarray, reach: int, max_gap: int
) -> tuple[int, int, int]:
    """(false alerts, labelled events reached by an alert, labelled events)."""
    events = labelled_events(labels)
    starts = alert_starts(flags, max_gap)
    near = np.zeros(len(labels) + reach, dtype=bool)  # inside an event or within reach
    reached = 0
    for a, b in events:
        near[max(a - reach, 0) : b + reach] = True
        reached += bool(((starts >= a - reach) & (starts < b)).any())
    return int((~near[starts]).sum()), reached, len(events)


def flag_quality(
    alarm_score: np.ndarray,
    flags: np.ndarray,
    labels: np.ndarray,
    reach: int,
    max_gap: int,
    severity: np.ndarray | None = None,
    ranking: np.ndarray | None = None,
) -> dict[str, float]:
    """Every measure of the module doc for one scored part (arrays (n,)), with the counts
    that ``summarize`` pools over files; with ``severity``, the share of normal points
    whose severity is above 0.99 and 0.999 (if calibrated: 1 % and 0.1 %); with
    ``ranking``, the best F1 of a threshold on it counts in ``best_f1`` too."""
    labels = np.asarray(labels).astype(int)
    flags = np.asarray(flags, bool)
    normal = labels == 0
    f1 = point_f1(flags, labels)
    scores = [alarm_score] if ranking is None else [alarm_score, ranking]
    ceilings = [best_f1_threshold(score, labels)[0] for score in scores if labels.any()]
    ceiling = max(ceilings) if ceilings else float("nan")
    flagged_events, events = event_recall(flags, labels)
    false_alerts, reached, _ = alert_counts(flags, labels, reach, max_gap)
    n_normal = int(normal.sum())
    calibration = {}
    if severity is not None:
        for name, level in SEVERITY_LEVELS.items():
            severe = np.nan_to_num(np.asarray(severity)[normal], nan=0.0) > level
            calibration[name] = float(severe.mean()) if n_normal else float("nan")
    return {
        "normal_flagged": float(flags[normal].mean()) if n_normal else float("nan"),
        "point_f1": f1,
        "best_f1": ceiling,
        "f1_ratio": f1 / ceiling if ceiling > 0 else float("nan"),
        "event_recall": flagged_events / events if events else float("nan"),
        "false_alerts": PER_POINTS * false_alerts / n_normal if n_normal else float("nan"),
        "alert_recall": reached / events if events else float("nan"),
        "alerts": int(len(alert_starts(flags, max_gap))),
        "false_alert_count": false_alerts,
        "normal_points": n_normal,
        "events": events,
        "events_flagged": flagged_events,
        "events_alerted": reached,
        **calibration,
    }


def summarize(frame: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Flag quality per group of files (rows of ``flag_quality``), or of all of them.

    Normal points flagged: mean and median over files; point F1 and best F1: means, and
    their ratio; event and alert recall and false alerts: pooled over the group's points.
    """
    groups = frame.groupby(by) if by else [("all", frame)]
    rows = []
    for name, part in groups:
        f1, ceiling = part["point_f1"].mean(), part["best_f1"].mean()
        events = part["events"].sum()
        rows.append(
            {
                by or "group": name,
                "files": len(part),
                "normal_flagged": part["normal_flagged"].mean(),
                "normal_flagged_median": part["normal_flagged"].median(),
                "point_f1": f1,
                "best_f1": ceiling,
                "f1_ratio": f1 / ceiling if ceiling > 0 else float("nan"),
                "event_recall": part["events_flagged"].sum() / events if events else np.nan,
                "false_alerts": PER_POINTS
                * part["false_alert_count"].sum()
                / max(part["normal_points"].sum(), 1),
                "alert_recall": part["events_alerted"].sum() / events if events else np.nan,
                "events": int(events),
                **pooled_extras(part),
            }
        )
    return pd.DataFrame(rows)


def pooled_extras(part: pd.DataFrame) -> dict[str, float]:
    """Severity calibration pooled over the normal points of the files, regime changes
    summed, and the files drifting at their end: where the files report them."""
    extras = {}
    for name in SEVERITY_LEVELS:
        if name in part:
            extras[name] = (part[name] * part["normal_points"]).sum() / part["normal_points"].sum()
    for name in ("rebaselines", "drifting"):
        if name in part:
            extras[name] = int(part[name].sum())
    return extras


def flags_line(quality: dict[str, float]) -> str:
    """One file's flag quality in a line of text."""
    q = quality
    return (
        f"normal flagged {q['normal_flagged']:.2%}, F1 {q['point_f1']:.2f}/{q['best_f1']:.2f}, "
        f"events flagged {q['events_flagged']}/{q['events']}, alerts {q['alerts']} "
        f"({q['false_alerts']:.1f} false per 10k normal, {q['events_alerted']} reaching events)"
    )
