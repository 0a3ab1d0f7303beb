"""Query results aligned on the step grid: one frame per group, one column per variable.

A group is one combination of the detector's ``group_by`` label values (a label a
series lacks counts as the empty value, as in PromQL). Per group and variable,
missing points are NaN. A group is set aside, with its reason (``SKIP_REASONS``),
when one of its variables has no series at all (``missing_variable``), when a
variable's query returns several series for it that ``group_by`` does not tell
apart (``ambiguous_series``: mixing them would score nonsense), or when it is
beyond ``max_groups`` in label order (``too_many_groups``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.pull.reader import Series

SKIP_REASONS = (
    "missing_variable",  # a variable has no series for the group
    "ambiguous_series",  # several series of one variable fall in the group
    "too_many_groups",  # beyond the detector's max_groups
    "missing_data",  # a variable misses more than max_missing of the scoring context
    "stale",  # no new complete point since the group's last scored one
    "short_history",  # fewer points than the model's context needs
    "score_failed",  # the model refused or failed the group's data
)

GroupKey = tuple[str, ...]


@dataclass(frozen=True)
class GroupFrame:
    key: GroupKey
    labels: dict[str, str]  # group_by label -> value
    times: np.ndarray  # (n,) float64 Unix seconds on the step grid
    values: np.ndarray  # (n, D) float64, NaN where missing

    def current(self) -> GroupFrame:
        """The frame from its first row with any value (a series that appeared during
        the range starts there) to its last row where every variable has one (a series
        that stopped is not extended)."""
        missing = np.isnan(self.values)  # (n, D)
        observed = np.flatnonzero(~missing.all(axis=1))
        complete = np.flatnonzero(~missing.any(axis=1))
        if not complete.size:
            return GroupFrame(self.key, self.labels, self.times[:0], self.values[:0])
        rows = slice(int(observed[0]), int(complete[-1]) + 1)
        return GroupFrame(self.key, self.labels, self.times[rows], self.values[rows])


@dataclass
class Alignment:
    frames: dict[GroupKey, GroupFrame] = field(default_factory=dict)
    skipped: dict[GroupKey, str] = field(default_factory=dict)  # key -> SKIP_REASONS item
    problems: list[str] = field(default_factory=list)  # what made series ambiguous


def grid(start: float, end: float, step: float) -> np.ndarray:
    return start + step * np.arange(int(round((end - start) / step)) + 1)  # (n,)


def group_key(labels: dict[str, str], group_by: list[str]) -> GroupKey:
    return tuple(labels.get(name, "") for name in group_by)


def describe(group_by: list[str], key: GroupKey) -> str:
    """``{instance="a:9100"}``: a group as a PromQL selector (also its stream name)."""
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(group_by, key, strict=True)) + "}"


def align(
    results: dict[str, list[Series]],
    group_by: list[str],
    times: np.ndarray,
    max_groups: int,
) -> Alignment:
    """Frames of ``results`` (variable -> its query's series, in the model's variable
    order) on the grid ``times`` (n,)."""
    n, width = len(times), len(results)
    step = float(times[1] - times[0]) if n > 1 else 1.0
    columns: dict[GroupKey, np.ndarray] = {}
    alignment = Alignment()
    ambiguous: set[GroupKey] = set()
    for d, (variable, series_list) in enumerate(results.items()):
        seen: dict[GroupKey, list[dict[str, str]]] = {}
        for series in series_list:
            key = group_key(series.labels, group_by)
            seen.setdefault(key, []).append(series.labels)
            if len(seen[key]) > 1:
                ambiguous.add(key)
                continue
            index = np.rint((series.times - times[0]) / step).astype(np.int64)
            inside = (index >= 0) & (index < n)
            block = columns.setdefault(key, np.full((n, width), np.nan))
            block[index[inside], d] = series.values[inside]
        alignment.problems += [
            f"{variable}: {len(found)} series fall in group {describe(group_by, key)}, "
            f"differing in {', '.join(differing_labels(found))}"
            for key, found in sorted(seen.items())
            if len(found) > 1
        ]
    for rank, key in enumerate(sorted(columns)):
        block = columns[key]
        if key in ambiguous:
            alignment.skipped[key] = "ambiguous_series"
        elif np.isnan(block).all(axis=0).any():
            alignment.skipped[key] = "missing_variable"
        elif rank >= max_groups:
            alignment.skipped[key] = "too_many_groups"
        else:
            labels = dict(zip(group_by, key, strict=True))
            alignment.frames[key] = GroupFrame(key, labels, times, block)
    return alignment


def differing_labels(label_sets: list[dict[str, str]]) -> list[str]:
    """The labels whose values are not the same in every one of ``label_sets``."""
    names = set().union(*label_sets)
    return sorted(n for n in names if len({labels.get(n) for labels in label_sets}) > 1)


def missing_share(values: np.ndarray) -> np.ndarray:
    """Share of missing points per variable: (n, D) -> (D,)."""
    return np.isnan(values).mean(axis=0)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation along the rows, the nearest value beyond the first / last
    (model.data's rule): (n, D) with NaN -> (n, D) finite. Every column needs a value."""
    filled = values.copy()
    positions = np.arange(len(values))
    for d in np.flatnonzero(np.isnan(values).any(axis=0)):
        gaps = np.isnan(values[:, d])
        filled[gaps, d] = np.interp(positions[gaps], positions[~gaps], values[~gaps, d])
    return filled


def to_datetime64(times: np.ndarray) -> np.ndarray:
    """Unix seconds (float) -> datetime64[ns], exact to the millisecond."""
    return (np.rint(times * 1000).astype(np.int64) * 1_000_000).astype("datetime64[ns]")


@dataclass(frozen=True)
class TrainingData:
    values: np.ndarray  # (n, D) finite, the usable groups one after another in label order
    times: np.ndarray  # (n,) float64 Unix seconds (steps back where a group begins)
    groups: int  # groups used
    skipped: dict[GroupKey, str]


def training_data(alignment: Alignment, max_missing: float) -> TrainingData:
    """Each usable group's history, gaps filled, concatenated. A group's rows before its
    first and after its last observation are left out (a series that started late or
    ended); a group missing more than ``max_missing`` of a variable is left out."""
    parts, stamps, skipped = [], [], dict(alignment.skipped)
    for key, frame in sorted(alignment.frames.items()):
        observed = np.flatnonzero(~np.isnan(frame.values).all(axis=1))
        rows = slice(observed[0], observed[-1] + 1)
        values = frame.values[rows]
        if np.isnan(values).all(axis=0).any() or missing_share(values).max() > max_missing:
            skipped[key] = "missing_data"
            continue
        parts.append(fill_gaps(values))
        stamps.append(frame.times[rows])
    width = len(next(iter(alignment.frames.values())).values[0]) if alignment.frames else 0
    values = np.concatenate(parts) if parts else np.empty((0, width))
    times = np.concatenate(stamps) if stamps else np.empty(0)
    return TrainingData(values, times, len(parts), skipped)
