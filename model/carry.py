"""The carry: a flagged run goes on through a long anomaly while its ranking stays high.

Inside a long anomaly the alarm score crosses the stream's limit on a few points
only, while the ranking score, averaged over up to 2T steps, stays high on most of
them (docs/quality.md): the flags covered a few rows of an anomaly hundreds of rows
long. After the other checks (``model/alarm.py``), a point that follows a flag, or a
point carried, is flagged too while

- its ranking score is above its alert's *bar*, moved ``CARRY_RISE`` of the way from
  the bar towards the highest ranking score of the alert's flags so far: the bar is the
  higher of the ``CARRY_LEVEL`` quantile of the last ``history`` ranking scores not
  above the limit (the validation's first, all of them) and the recent check's
  reference (``recent_reference``), both at the alert's first flag; an alert whose
  recent past is mostly above the limit (a drifted series) has no recent reference,
  and is not carried;
- and it lies within ``span`` points of the last point above the limit or flagged.

An alert is a flag with no other within ``gap`` (T/2) points before it (as the lone
check counts them). A carried point never starts an alert, so nothing more pages; it
makes a run longer, and a run it joins to the next pages once. A lone spike's
ranking score falls over 2T after it, and the bar moved towards its height ends its
carry sooner than the plateau of a long anomaly. Only streams scored as series
carry: a causal stream's trailing ranking score holds an anomaly's height for 2T
past its end, and its carry runs on after every anomaly, false or true
(docs/quality.md).

Carrying a series in one call or in consecutive chunks gives the same flags and the
same state (``Carry``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from model.errors import ArtifactError
from model.stored import nulls, stored_bool, stored_integer, stored_level, stored_nans
from model.threshold import LARGEST

CARRY_LEVEL = 0.99  # quantile of the recent ranking scores not above the limit
CARRY_RISE = 0.25  # share of the way from the bar towards the alert's highest flag
CARRY_HISTORY = 100  # windows T of ranking scores the level is the quantile of


@dataclass(frozen=True)
class Carry:
    """What a stream's carry keeps from one chunk to the next."""

    span: int  # points past the last point above the limit or flagged
    gap: int  # a flag with no other this close before it starts an alert
    history: int  # ranking scores the bar's level is the CARRY_LEVEL quantile of
    past: list[float] = field(default_factory=list)  # the last ``history`` (NaN: above)
    bar: float | None = None  # the alert going on's bar (None: none, or not carried)
    peak: float | None = None  # the highest ranking score of its flags so far
    # points from the last flag, and from the last point above the limit or flagged, to
    # the next point (capped at gap + 1 and span + 1: none that near)
    since_flag: int = 0
    since_last: int = 0
    on: bool = False  # the last point was flagged or carried, and may be carried on

    @classmethod
    def start(cls, span: int, gap: int, history: int, validation: np.ndarray) -> Carry:
        """A stream's first carry from the validation's ranking scores (non-finite ones
        left out, as NaN)."""
        scores = np.asarray(validation, dtype=float)[-history:]
        past = np.where(np.isfinite(scores), scores, np.nan).tolist()
        return cls(span, gap, history, past, since_flag=gap + 1, since_last=span + 1)

    @classmethod
    def of_model(cls, window: int, windows: int, validation: np.ndarray) -> Carry:
        """The first carry of a series stream of a model of window T whose config has
        ``carry_windows`` = ``windows``: a span of that many windows, alerts apart by
        T/2, CARRY_HISTORY windows of history."""
        return cls.start(windows * window, window // 2, CARRY_HISTORY * window, validation)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "past": nulls(self.past)}

    @classmethod
    def from_dict(cls, data: Any) -> Carry | None:
        """Rebuild from ``to_dict`` output (None: a stream without a carry, states saved
        before); ArtifactError if it is malformed."""
        if data is None:
            return None
        try:
            carry = cls(
                stored_integer(data["span"]),
                stored_integer(data["gap"]),
                stored_integer(data["history"]),
                stored_nans(data["past"]),
                stored_level(data["bar"]),
                stored_level(data["peak"]),
                stored_integer(data["since_flag"]),
                stored_integer(data["since_last"]),
                stored_bool(data["on"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(f"stream state carry: {exc!r}") from exc
        sizes_ok = carry.span >= 1 and carry.gap >= 0 and carry.history >= 1
        sizes_ok &= len(carry.past) <= carry.history
        sizes_ok &= 1 <= carry.since_flag <= carry.gap + 1
        sizes_ok &= 1 <= carry.since_last <= carry.span + 1
        sizes_ok &= (carry.bar is None) == (carry.peak is None)
        sizes_ok &= not carry.on or carry.bar is not None
        if not sizes_ok:
            raise ArtifactError("stream state carry: inconsistent sizes")
        kept = [v for v in carry.past if v == v]  # NaN: a point above the limit
        levels = [*kept, *(v for v in (carry.bar, carry.peak) if v is not None)]
        if not np.all(np.isfinite(levels)):
            raise ArtifactError("stream state carry: non-finite values")
        return carry


def carried(
    flags: np.ndarray,
    ranking: np.ndarray,
    above: np.ndarray,
    reference: np.ndarray | None,
    carry: Carry,
) -> tuple[np.ndarray, Carry]:
    """``flags`` (n,) and the points carried after them (the module doc): ``ranking``
    the ranking score, ``above`` the points above the limit (or below a held one),
    ``reference`` the recent check's reference per point (None: no recent check, the
    level alone is the bar). Returns the flags and the carry after the last point. An
    infinite ranking score counts as LARGEST; an alert whose first flag has none (NaN)
    is not carried."""
    own = np.where(above | ~np.isfinite(ranking), np.nan, ranking)
    history = np.concatenate([np.asarray(carry.past, dtype=float), own])
    out = flags.copy()
    bar = math.nan if carry.bar is None else carry.bar
    peak = math.nan if carry.peak is None else carry.peak
    since_flag, since_last, on = carry.since_flag, carry.since_last, carry.on
    first = len(carry.past)
    scores = np.minimum(ranking, LARGEST).tolist()  # NaN stays NaN
    points = zip(flags.tolist(), scores, above.tolist(), strict=True)
    for i, (flag, score, high) in enumerate(points):
        if flag:
            if since_flag > carry.gap:  # an alert: its bar
                bar, peak = _bar(history[max(0, first + i - carry.history) : first + i]), score
                if reference is not None:
                    bar = max(bar, reference[i]) if reference[i] == reference[i] else math.nan
                bar = bar if score == score else math.nan  # no ranking score: no carry
            peak, since_flag, since_last, on = max(peak, score), 0, 0, bar == bar
        else:
            on = on and since_last <= carry.span and score > bar + CARRY_RISE * (peak - bar)
            out[i] = on
        since_flag = min(since_flag + 1, carry.gap + 1)
        since_last = 1 if high else min(since_last + 1, carry.span + 1)
    known = bar == bar
    after = replace(  # plain Python values: the state goes to JSON
        carry,
        past=history[-carry.history :].tolist(),
        bar=float(bar) if known else None,
        peak=float(peak) if known else None,
        since_flag=since_flag,
        since_last=since_last,
        on=bool(on),
    )
    return out, after


def _bar(scores: np.ndarray) -> float:
    """The CARRY_LEVEL quantile of ``scores``, NaN left out (NaN: none left, no carry)."""
    kept = scores[scores == scores]
    return float(np.quantile(kept, CARRY_LEVEL)) if len(kept) else math.nan
