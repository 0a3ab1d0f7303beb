"""A threshold that follows the scores as they arrive: streaming peaks-over-threshold
with drift (DSPOT, Siffer et al., KDD 2017).

The scores of a stream are taken one at a time, in order. With ``depth`` d > 0 each
score s is compared with the *level* m, the mean of the last d scores that were not
flagged, and the residual r = s - m is what the tail describes (d = 0: r = s, plain
SPOT). The residuals' tail above ``initial`` (t, fixed at the start) is a
generalized Pareto distribution (``model/threshold.py``); the threshold on the
residual is its ``1 - risk`` quantile z_q (at least ``z_min``, below), so a point is
flagged when

    s > m + z_q        (``limit``, in the score's units)

("above" is beyond the scores' rounding, ``model.threshold.exceeds``, here and for
the peaks below). A point that is not flagged updates the state: it enters the
level's window, and when r > t its excess r - t becomes a peak and the tail is
refitted (a flagged point changes nothing, so an anomaly does not teach the
threshold that it is normal). The state keeps the last ``MAX_PEAKS`` peaks and the
total counts of peaks and scores, whose ratio is the tail's mass.

Leaving flagged points out of the peaks truncates the tail: the share of a
stationary stream flagged is a few times ``risk`` rather than ``risk``
(tests/model/test_spot.py), the price of a threshold that anomalies cannot raise.
Each refit on a truncated tail lowers z_q, and more points are then flagged and left
out, so a refit never sets z_q below ``z_min``: the starting fit's GPD quantile at
``Z_MIN_RISKS`` x the risk (``lowest_z``), or, where the validation scores that start
a stream had too few peaks for a GPD, the first refit's that has enough
(``fit_spot(..., bound_at_first_fit=True)``). Where ``z_min`` holds z_q up, z_q is above
the tail's ``1 - risk`` quantile, and severity (from the tail) is above ``1 - risk``
at some points below the limit. Without the bound, the share flagged kept growing for
as long as the stream ran (``bench/spot_long_run.py``, docs/quality.md); with it,
z_q cannot follow a series whose scores become quieter than those of the start (the
level m still follows a series that moves). A threshold refitted on a regime's W
points (``model/stream.py``), too few peaks for a GPD, has no bound: its first GPD
fits would set it from the few peaks of its start, which hold the jump into the new
level.

The state is small, JSON-able (``SpotState.to_dict``), and advancing it over a
series in one call or in consecutive chunks gives the same flags and the same state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import genpareto

from model.errors import ArtifactError
from model.threshold import Threshold, above, exceeds, fit_gpd, fit_threshold, pot_quantile

MAX_PEAKS = 1000  # peaks kept for the tail fit: the state stays a few tens of kB
MIN_PEAKS = 10  # fewer peaks than this: the threshold stays the empirical quantile
# the tail is refitted after every new peak while there are few, and after every
# len(peaks) // REFIT_EVERY new peaks later on, so that a run of peaks (a drift) costs
# O(1) fits per peak on average rather than a fit of up to MAX_PEAKS each
REFIT_EVERY = 50
# a refit keeps z_q at or above the first GPD fit's quantile at this many times the
# risk (module doc): the share of a stationary stream flagged no longer grows for good
Z_MIN_RISKS = 3


@dataclass(frozen=True)
class SpotState:
    """Where a stream's threshold stands (see the module doc)."""

    tail: Threshold  # on residuals, as last fitted: value z_q, initial t, shape, scale
    depth: int  # d, scores in the level's window (0: no level)
    n_peaks: int  # residuals above t seen so far (fit and stream, flagged ones excluded)
    n_scores: int  # residuals seen so far (the same)
    since_fit: int = 0  # peaks since the tail was last fitted
    peaks: list[float] = field(default_factory=list)  # the last excesses r - t, oldest first
    recent: list[float] = field(default_factory=list)  # the last d scores not flagged
    z_min: float | None = None  # the lowest z_q a refit may set (None: no bound)
    z_min_due: bool = False  # z_min is set at the first GPD fit (False: states saved before)

    @property
    def level(self) -> float:
        return float(np.mean(self.recent)) if self.recent else 0.0

    @property
    def limit(self) -> float:
        """The score the next point must exceed to be flagged."""
        return self.level + self.tail.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpotState:
        """Rebuild from ``to_dict`` output; ArtifactError if it is malformed."""
        try:
            state = cls(
                Threshold.from_dict(data["tail"]),
                int(data["depth"]),
                int(data["n_peaks"]),
                int(data["n_scores"]),
                int(data["since_fit"]),
                [float(v) for v in data["peaks"]],
                [float(v) for v in data["recent"]],
                None if data.get("z_min") is None else float(data["z_min"]),  # not saved before
                bool(data.get("z_min_due", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"stream threshold state: {exc!r}") from exc
        sizes_ok = 0 <= state.n_peaks <= state.n_scores and len(state.peaks) <= MAX_PEAKS
        sizes_ok = sizes_ok and 0 <= state.since_fit <= state.n_peaks
        if state.depth < 0 or len(state.recent) > state.depth or not sizes_ok:
            raise ArtifactError("stream threshold state: inconsistent sizes")
        z_min = [] if state.z_min is None else [state.z_min]
        if not np.all(np.isfinite(state.peaks + state.recent + z_min)):
            raise ArtifactError("stream threshold state: non-finite values")
        if z_min and (state.tail.method != "pot" or state.z_min > state.tail.value):
            raise ArtifactError("stream threshold state: z_min above z_q or without a GPD")
        if z_min and state.z_min_due:
            raise ArtifactError("stream threshold state: z_min both set and due")
        return state


def residuals(scores: np.ndarray, depth: int) -> np.ndarray:
    """s_i - mean(s_{i-d} .. s_{i-1}) for i >= d (all of ``scores`` when d = 0)."""
    if depth == 0:
        return scores
    sums = np.concatenate([[0.0], np.cumsum(scores)])
    return scores[depth:] - (sums[depth:-1] - sums[: -depth - 1]) / depth


def fit_spot(
    scores: np.ndarray,
    risk: float,
    depth: int,
    init_level: float = 0.98,
    bound_at_first_fit: bool = False,
) -> SpotState:
    """The starting state from scores of normal data (the validation tail), in order.

    The level's window needs d scores before the first residual; with fewer than
    2 d scores the window is shortened to half of them. With too few peaks for a GPD,
    the state has no bound on z_q, or, with ``bound_at_first_fit``, takes it from its
    first GPD fit (module doc).
    """
    x = np.asarray(scores, dtype=float)
    x = x[np.isfinite(x)]
    depth = min(depth, len(x) // 2)
    r = residuals(x, depth)
    tail = fit_threshold(r, risk=risk, init_level=init_level, min_peaks=MIN_PEAKS)
    peaks = (r[exceeds(r, tail.initial)] - tail.initial)[-MAX_PEAKS:].tolist()
    recent = x[len(x) - depth :].tolist()
    z_min = lowest_z(tail)
    due = bound_at_first_fit and tail.method != "pot"
    return SpotState(tail, depth, tail.n_peaks, tail.n_scores, 0, peaks, recent, z_min, due)


def lowest_z(tail: Threshold) -> float | None:
    """The lowest z_q that refits of ``tail`` may set: its GPD's quantile at
    ``Z_MIN_RISKS`` x its risk. None for a tail fitted on too few peaks for a GPD (its
    quantile that far out would be the largest residual seen), and where that quantile
    is not above the peaks threshold t (a risk above (1 - 0.98) / 3), which no refit
    goes below anyway."""
    if tail.method != "pot":
        return None
    ratio = Z_MIN_RISKS * tail.risk * tail.n_scores / tail.n_peaks
    value = pot_quantile(tail.initial, tail.shape, tail.scale, ratio)
    return value if math.isfinite(value) and value > tail.initial else None


def spot_from_threshold(tail: Threshold) -> SpotState:
    """A SPOT state (no level) for a threshold fitted before streams existed: its peaks
    are the tail's own quantiles (the fitted GPD's, or the stored empirical ones above t)."""
    count = min(tail.n_peaks, MAX_PEAKS)
    if tail.method == "pot" and count:
        levels = (np.arange(count) + 0.5) / count
        peaks = genpareto.ppf(levels, tail.shape, loc=0.0, scale=tail.scale)
    else:
        reference = np.asarray(tail.reference)
        peaks = reference[exceeds(reference, tail.initial)] - tail.initial
    due = tail.method != "pot"  # fitted on validation scores, as a stream's start
    return SpotState(
        tail, 0, tail.n_peaks, tail.n_scores, 0, peaks.tolist(), [], lowest_z(tail), due
    )


@dataclass(frozen=True)
class SpotResult:
    flags: np.ndarray  # (n,) score > limit (NaN scores: never)
    limits: np.ndarray  # (n,) the limit each score met (NaN where the score is NaN)
    exceedance: np.ndarray  # (n,) P(normal residual >= this one) under the tail of the time
    state: SpotState  # after the last score


class SpotStream:
    """A state made mutable while scores are run through it one at a time."""

    def __init__(self, state: SpotState) -> None:
        self.tail = state.tail
        self.depth = state.depth
        self.n_peaks, self.n_scores, self.since_fit = state.n_peaks, state.n_scores, state.since_fit
        self.peaks = deque(state.peaks, maxlen=MAX_PEAKS)
        self.recent = deque(state.recent, maxlen=max(state.depth, 1))
        self.z_min, self.z_min_due = state.z_min, state.z_min_due

    def level(self) -> float:
        # summed afresh (not a running total), so that the level, and every flag, is
        # the same whether a series is run in one call or in chunks
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    def step(self, score: float) -> tuple[bool, float, float]:
        """Decide one finite score: (flagged, the limit it met, its residual)."""
        level = self.level()
        residual = score - level
        limit = level + self.tail.value
        flagged = score > above(limit)  # in the score's units: its rounding, not the residual's
        if not flagged:
            self.accept(score, level, residual)
        return flagged, limit, residual

    def accept(self, score: float, level: float, residual: float) -> None:
        """A score that was not flagged: into the level's window and, if a peak, the tail."""
        if self.depth:
            self.recent.append(score)
        self.n_scores += 1
        if score > above(level + self.tail.initial):
            self.peaks.append(residual - self.tail.initial)
            self.n_peaks += 1
            self.since_fit += 1
            if self.since_fit >= max(1, len(self.peaks) // REFIT_EVERY):
                self.refit_tail()

    def refit_tail(self) -> None:
        """The tail refitted on the peaks kept, z_q at least ``z_min``, which a start with
        too few peaks for a GPD takes from its first GPD fit (module doc)."""
        self.tail = refit(
            self.tail, np.asarray(self.peaks), self.n_peaks, self.n_scores, self.z_min
        )
        if self.z_min_due and self.tail.method == "pot":
            self.z_min, self.z_min_due = lowest_z(self.tail), False
        self.since_fit = 0

    def state(self) -> SpotState:
        return SpotState(
            self.tail,
            self.depth,
            self.n_peaks,
            self.n_scores,
            self.since_fit,
            list(self.peaks),
            list(self.recent),
            self.z_min,
            self.z_min_due,
        )


def refit(
    tail: Threshold, peaks: np.ndarray, n_peaks: int, n_scores: int, z_min: float | None = None
) -> Threshold:
    """The tail refitted on ``peaks`` with mass n_peaks / n_scores, its z_q at least
    ``z_min``; unchanged when there are too few peaks or the fit fails."""
    fit = fit_gpd(peaks) if len(peaks) >= MIN_PEAKS else None
    if fit is None:
        return tail
    shape, scale = fit
    value = pot_quantile(tail.initial, shape, scale, tail.risk * n_scores / n_peaks)
    if z_min is not None:
        value = max(value, z_min)  # a NaN value stays NaN, and is refused below
    if not (np.isfinite(value) and value > tail.initial):
        return tail
    changes = {"value": value, "method": "pot", "shape": shape, "scale": scale}
    return Threshold(**{**asdict(tail), **changes, "n_peaks": n_peaks, "n_scores": n_scores})


class TailLog:
    """Which tail decided each point, so that exceedance probabilities are computed
    afterwards in one vectorized call per tail."""

    def __init__(self, n: int) -> None:
        self.tails: list[Threshold] = []
        self.index = np.full(n, -1)
        self.residual = np.full(n, np.nan)

    def record(self, i: int, tail: Threshold, residual: float) -> None:
        if not self.tails or tail is not self.tails[-1]:
            self.tails.append(tail)
        self.index[i], self.residual[i] = len(self.tails) - 1, residual

    def exceedance(self) -> np.ndarray:
        out = np.full(len(self.index), np.nan)
        for k, tail in enumerate(self.tails):
            at = self.index == k
            out[at] = tail.exceedance_probability(self.residual[at])
        return out


def run_spot(state: SpotState, scores: np.ndarray) -> SpotResult:
    """Advance ``state`` over ``scores`` (n,) in order; NaN scores are skipped."""
    stream = SpotStream(state)
    n = len(scores)
    flags, limits, log = np.zeros(n, dtype=bool), np.full(n, np.nan), TailLog(n)
    for i, score in enumerate(np.asarray(scores, dtype=float).tolist()):
        if score == score:  # NaN (causal warm-up) is skipped
            tail = stream.tail
            flags[i], limits[i], residual = stream.step(score)
            log.record(i, tail, residual)
    return SpotResult(flags, limits, log.exceedance(), stream.state())
