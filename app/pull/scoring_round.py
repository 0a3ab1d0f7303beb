"""One scoring round of one detector: read the newest points with their context, align
them into groups, score each group's new points through the host.

Each round reads ``context_points + new`` points per series, ``new`` being the steps
since the previous round (at most ``context_points``: after an outage the older
missed points are not back-filled), so every scored point has its group's own
history as context and no run starts cold. Per group:

- rows after the last one where every variable has a value are left out (a series
  that stopped is not extended); with no new complete row the group is ``stale``;
- rows before the first with any value are left out (a group that just appeared);
  fewer rows than the context needs: ``short_history`` (a new group waits until it
  has ``context_points`` of history);
- a variable missing more than ``max_missing`` of the rows: ``missing_data``;
  otherwise its gaps are filled by linear interpolation;
- the host's ``score`` failing: ``score_failed`` (counted as an error too).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from app.pull.detectors_file import DetectorSpec
from app.pull.exporter import GroupScore, anomaly_ratio, exported_label
from app.pull.frames import (
    Alignment,
    GroupFrame,
    GroupKey,
    align,
    describe,
    fill_gaps,
    grid,
    missing_share,
    to_datetime64,
)
from app.pull.host import ModelHost, StreamResult
from app.pull.reader import PrometheusReader
from model.errors import LvadError

log = logging.getLogger(__name__)


@dataclass
class ScoringState:
    """What one detector remembers between rounds."""

    last_end: float | None = None  # the grid end of the last round that read its data
    last_scored: dict[GroupKey, float] = field(default_factory=dict)  # group -> newest point


@dataclass(frozen=True)
class ScoredGroup:
    labels: dict[str, str]  # group_by label -> value, as read
    result: StreamResult
    times: np.ndarray  # (m,) Unix seconds of the reported points
    latest: np.ndarray  # (D,) the latest point's values, in the model's variable order

    def exported(self) -> GroupScore:
        labels = {exported_label(k): v for k, v in self.labels.items()}
        ratio = anomaly_ratio(float(self.result.alarm_score[-1]), float(self.result.threshold[-1]))
        flagged = bool(self.result.is_anomaly[-1])
        return GroupScore(labels, ratio, flagged, self.result.expected, self.latest)


@dataclass
class RoundResult:
    """``status``: ``scored``, ``no_model`` (nothing to score with yet), ``not_due`` (the
    step grid has not advanced since the last round), ``failed`` (see ``errors``) or
    ``standby`` (another replica runs the detectors)."""

    status: str
    variables: list[str] = field(default_factory=list)
    groups: list[ScoredGroup] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> groups
    errors: Counter = field(default_factory=Counter)  # reason -> count
    end: float | None = None  # the grid's last point

    @property
    def points(self) -> int:
        return sum(len(g.times) for g in self.groups)


def grid_end(now: float, step: float) -> float:
    return math.floor(now / step) * step


def read_aligned(
    spec: DetectorSpec, reader: PrometheusReader, variables: list[str], start: float, end: float
) -> Alignment:
    """Every variable's query over start..end, aligned into groups (PrometheusError raised)."""
    results = {v: reader.query_range(spec.queries[v], start, end, spec.step) for v in variables}
    return align(results, spec.group_by, grid(start, end, spec.step), spec.max_groups)


def score_round(
    spec: DetectorSpec, host: ModelHost, reader: PrometheusReader, state: ScoringState, now: float
) -> RoundResult:
    """Score the points new since the last round; PrometheusError if a query fails (the
    state is then unchanged)."""
    variables = host.variables(spec.model)
    if variables is None:
        return RoundResult("no_model")
    if sorted(variables) != sorted(spec.variables):
        log.warning("detector %s: the model's variables %s are not the file's %s",
                    spec.model, variables, spec.variables)  # fmt: skip
        return RoundResult("failed", variables, errors=Counter(model_mismatch=1))
    context = host.context_points(spec.model)
    end = grid_end(now, spec.step)
    if state.last_end is not None and end <= state.last_end:
        return RoundResult("not_due", variables, end=end)
    missed = 1 if state.last_end is None else round((end - state.last_end) / spec.step)
    start = end - (context + min(max(missed, 1), context) - 1) * spec.step
    alignment = read_aligned(spec, reader, variables, start, end)
    result = RoundResult("scored", variables, end=end)
    result.skipped.update(alignment.skipped.values())
    if alignment.problems:
        log.warning("detector %s: %s", spec.model, "; ".join(alignment.problems[:5]))
        result.errors["ambiguous_series"] += 1
    for key, frame in alignment.frames.items():
        scored = score_group(spec, host, frame, state.last_scored.get(key, -math.inf), context)
        if isinstance(scored, str):
            result.skipped[scored] += 1
            if scored == "score_failed":
                result.errors["score_failed"] += 1
            continue
        state.last_scored[key] = float(scored.times[-1])
        result.groups.append(scored)
    present = set(alignment.frames) | set(alignment.skipped)
    state.last_scored = {k: t for k, t in state.last_scored.items() if k in present}
    state.last_end = end
    return result


def score_group(
    spec: DetectorSpec, host: ModelHost, frame: GroupFrame, last_scored: float, context: int
) -> ScoredGroup | str:
    """The group's new points scored, or the reason it was skipped (SKIP_REASONS)."""
    frame = frame.current()
    if len(frame.times) == 0 or frame.times[-1] <= last_scored:
        return "stale"
    if len(frame.times) <= context:
        return "short_history"
    if missing_share(frame.values).max() > spec.max_missing:
        return "missing_data"
    first_new = max(context, int(np.searchsorted(frame.times, last_scored, side="right")))
    stream = spec.model + describe(spec.group_by, frame.key)
    try:
        result = host.score(
            spec.model,
            stream,
            fill_gaps(frame.values),
            to_datetime64(frame.times),
            context=first_new,
        )
    except LvadError as exc:
        log.warning("detector %s: scoring %s failed: %s", spec.model, stream, exc.message)
        return "score_failed"
    return ScoredGroup(frame.labels, result, frame.times[first_new:], frame.values[-1])
