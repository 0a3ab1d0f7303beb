"""The alarm state of one model's stream: an adaptive threshold, regime changes and drift.

A detector's stream of alarm scores is decided by a DSPOT threshold
(``model/spot.py``) that starts from the model's validation scores. Two things
are watched over the last ``window`` W scores:

* **Regime change**: when at least a third of the last W points were above the limit,
  the series has moved to a level the threshold was not fitted for (the test parts of
  SMD machine-3-4 and of several SMAP/MSL channels move to a new level for good). A
  third, not half: a new level with its own noise exceeds the old limit at only part
  of its points, and waiting for half of them flagged more normal rows (docs/quality.md).
  Flagging on would page on every point until the model is retrained, so the
  threshold is fitted afresh on those W scores (``rebaselines`` counts it): one
  alert marks the change, and later points are judged against the new level. The
  refitted threshold follows that level (DSPOT, ``model/spot.py``: each score less
  the mean of the last ``regime_depth`` unflagged ones): a series that has left its
  validation data often keeps moving (a ramp, a level that creeps up), and a
  threshold fitted on the window's scores alone is then exceeded again and again.
  **The regime ends** when the last W scores look like the validation data again
  (no more of them above its 98 % quantile than the 2 % expected there): the
  threshold the refit replaced is restored (counted too). A long anomaly also
  triggers a refit, on its own scores; without the return, the limit would stay
  where the anomaly put it and hide every later anomaly below that (on NAB, docs/
  quality.md). A series that settles on a third level, neither the anomaly's nor
  the validation's, keeps the refitted threshold and stays drifting.
* **Drift**: the share of the last W scores above the 98 % quantile of the
  validation scores (0.02 expected while the data look like the validation data,
  1 when all of them are higher). ``drifting`` when more than half are: the model
  no longer describes the data and should be retrained. Unlike the threshold,
  the drift reference never moves, so a regime change keeps the drift on.

A point is flagged when it is above its limit and so were the ``min_run`` - 1 points
before it (``min_run`` = 1: every point above its limit), and the ranking score
confirms it (``confirm`` and the other checks of ``model/alarm.py``, which decides
them, as the state sees only the alarm scores). A longer minimum run drops
isolated exceedances, which start most false alerts, at the price of the events
that only such points reach (docs/quality.md); SPOT and the regime rule still see
every point above the limit, so the threshold is the same whatever ``min_run``.

Advancing a state over a series in one call or in consecutive chunks gives the
same flags and the same state; ``StreamState.to_dict`` is JSON-able: a few KB, more
where the seasonal check keeps a long period's ranking scores or a series stream's
carry its last 100T (``model/carry.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np

from model.carry import Carry
from model.errors import ArtifactError
from model.levels import Taken
from model.spot import SpotState, SpotStream, TailLog, fit_spot, spot_from_threshold
from model.stored import nulls, stored_integer, stored_level, stored_nans
from model.threshold import LARGEST, Threshold, above, exceeds

DRIFT_LEVEL = 0.98  # validation quantile that the drift statistic counts exceedances of
DRIFTING = 0.5  # share of the window above it from which a stream is drifting
REGIME_SHARE = 1 / 3  # share of the window above the limit from which the threshold is refitted
# share of the window above the drift level at or below which a regime has ended: the
# share expected on validation data (looser bounds measured worse, docs/quality.md)
SETTLED = 1 - DRIFT_LEVEL
# DSPOT level window of a threshold refitted on a new regime, in model windows T
# (``regime_level_points``; docs/quality.md)
REGIME_LEVEL = 0.25


@dataclass(frozen=True)
class StreamState:
    """Everything a stream's alarm carries from one chunk to the next."""

    spot: SpotState  # the adaptive threshold
    causal: bool  # the scores are causal (each point the last step of its window)
    depth: int  # DSPOT level window, as configured (``spot.depth`` may be shorter)
    window: int  # W, points watched for a regime change and for drift (0: neither)
    drift_level: float  # the validation scores' DRIFT_LEVEL quantile
    scores: list[float] = field(default_factory=list)  # the last W scores (NaN skipped)
    flags: list[bool] = field(default_factory=list)  # above the limit, since the last rebaseline
    rebaselines: int = 0  # regime changes so far, and their ends
    seen: int = 0  # scores decided so far (NaN skipped)
    min_run: int = 1  # points in a row above the limit before they are flagged
    run: int = 0  # points in a row above the limit up to the last one (NaN skipped)
    home: SpotState | None = None  # the threshold a regime change replaced, until it returns
    regime_depth: int = 0  # DSPOT level window of a threshold refitted on a new regime
    # the ranking score a point above the limit must also exceed to be flagged
    # (``model/alarm.py``); None: every point above it (states saved before)
    confirm: float | None = None
    # the flags' recent check (``model/alarm.py``, ``recent_reference``): a point is
    # compared with the ranking scores of the ``recent_span`` points that end
    # ``recent_gap`` points before it; ``recent`` holds the last span + gap of them (NaN:
    # above the limit or below a held one, left out); span 0: no check (states saved
    # before)
    recent_span: int = 0
    recent_gap: int = 0
    recent: list[float] = field(default_factory=list)
    # the flags' seasonal check (``model/season.py``): a point is compared with the
    # ranking scores within ``season_half`` points of the same phase ``season_period``
    # points before it; ``season`` holds the last period + half of them (NaN: unscored);
    # period 0: no check (a model whose training data have no period, states saved before);
    # a point of a run above the limit is also kept where its first point was:
    # ``season_kept``, the verdict of the first point of the run going on
    season_period: int = 0
    season_half: int = 0
    season: list[float] = field(default_factory=list)
    season_kept: bool = True
    # whether the last point was in a run above the limit, points below a held limit
    # included (``model/alarm.py``); None: states saved before, where ``run`` says
    season_open: bool | None = None
    # the ranking score a point below a limit held up by the bound on the tail must
    # exceed to be flagged (``model/alarm.py``, ``held_points``); None: no such flags
    # (states saved before)
    held: float | None = None
    # the flags' lone check (``model/alarm.py``, ``lone_checked``): a flag with fewer
    # than ``lone_others`` points that passed the checks within the ``lone_gap`` points
    # before it needs a ranking score above ``lone``; None: no check (states saved
    # before); ``passed_ago``: how many points before the next one the last
    # ``lone_others`` that passed within the gap were, oldest first
    lone: float | None = None
    lone_gap: int = 0
    passed_ago: list[int] = field(default_factory=list)
    lone_others: int = 1  # states saved before: one
    # the values the variables held at one value in training have taken in the stream,
    # for the ranking score's learned levels (``model/levels.py``); states saved before:
    # none yet
    taken: Taken = field(default_factory=Taken)
    # the carry of flagged runs through long anomalies (``model/carry.py``); None: none
    # (causal streams, states saved before)
    carry: Carry | None = None

    @property
    def drift(self) -> float:
        """Share of the last W scores above ``drift_level`` (NaN before any score)."""
        if not self.scores:
            return np.nan
        return float(np.mean(exceeds(np.asarray(self.scores), self.drift_level)))

    @property
    def drifting(self) -> bool:
        return len(self.scores) == self.window > 0 and self.drift > DRIFTING

    def to_dict(self) -> dict[str, Any]:
        lists = {"recent": nulls(self.recent), "season": nulls(self.season)}
        parts = {"spot": self.spot.to_dict(), "taken": self.taken.to_dict()}
        parts["carry"] = None if self.carry is None else self.carry.to_dict()
        return {**asdict(self), **parts, **lists}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamState:
        """Rebuild from ``to_dict`` output; ArtifactError if it is malformed."""
        try:
            state = cls(
                SpotState.from_dict(data["spot"]),
                bool(data["causal"]),
                int(data["depth"]),
                int(data["window"]),
                float(data["drift_level"]),
                [float(v) for v in data["scores"]],
                [bool(v) for v in data["flags"]],
                int(data["rebaselines"]),
                int(data["seen"]),
                int(data.get("min_run", 1)),  # states saved before the minimum run
                int(data.get("run", 0)),
                None if data.get("home") is None else SpotState.from_dict(data["home"]),
                int(data.get("regime_depth", 0)),  # states saved before: refits without a level
                stored_level(data.get("confirm")),
                int(data.get("recent_span", 0)),  # states saved before: no recent check
                int(data.get("recent_gap", 0)),
                stored_nans(data.get("recent", [])),
                int(data.get("season_period", 0)),  # states saved before: no seasonal check
                int(data.get("season_half", 0)),
                stored_nans(data.get("season", [])),
                bool(data.get("season_kept", True)),
                None if data.get("season_open") is None else bool(data["season_open"]),
                stored_level(data.get("held")),  # states saved before: no such flags
                stored_level(data.get("lone")),  # states saved before: no lone check
                int(data.get("lone_gap", 0)),
                _passed(data.get("passed_ago")),
                stored_integer(data.get("lone_others", 1)),
                Taken.from_dict(data.get("taken")),
                Carry.from_dict(data.get("carry")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(f"stream state: {exc!r}") from exc
        sizes_ok = len(state.scores) <= state.window and len(state.flags) <= len(state.scores)
        sizes_ok &= len(state.recent) <= state.recent_span + state.recent_gap
        sizes_ok &= len(state.season) <= state.season_period + state.season_half
        sizes_ok &= state.season_period == 0 or state.season_period > state.season_half
        counts = (state.rebaselines, state.seen, state.run, state.min_run - 1, state.regime_depth)
        counts += (state.recent_span, state.recent_gap, state.season_period, state.season_half)
        counts += (state.lone_gap, state.lone_others - 1)
        counts_ok = min(counts) >= 0
        # passed_ago: at most lone_others, within the gap (1 to lone_gap), oldest first
        steps = [state.lone_gap + 1, *state.passed_ago, 0]
        counts_ok &= all(a > b for a, b in pairwise(steps))
        counts_ok &= len(state.passed_ago) <= state.lone_others
        home_ok = state.home is None or state.home.depth <= state.depth
        if not (sizes_ok and state.depth >= 0 and counts_ok and home_ok):
            raise ArtifactError("stream state: inconsistent sizes")
        confirm = [v for v in (state.confirm, state.held, state.lone) if v is not None]
        kept = [v for v in (*state.recent, *state.season) if v == v]  # NaN: a point left out
        if not np.all(np.isfinite([*state.scores, state.drift_level, *confirm, *kept])):
            raise ArtifactError("stream state: non-finite values")
        return state


def _passed(value: Any) -> list[int]:
    """A stored ``passed_ago``: a list of positions (``stored_integer``); one position or
    None in states saved before the check counted ``lone_others``."""
    if value is None:
        return []
    return [stored_integer(v) for v in (value if isinstance(value, list) else [value])]


def regime_level_points(window: int) -> int:
    """``regime_depth`` of the streams of a model of window T: REGIME_LEVEL x T points,
    at least 1."""
    return max(1, round(REGIME_LEVEL * window))


def start_stream(
    scores: np.ndarray,
    risk: float,
    depth: int,
    window: int,
    causal: bool = False,
    min_run: int = 1,
    regime_depth: int = 0,
    confirm: float | None = None,
    recent: tuple[int, int] = (0, 0),
    season: tuple[int, int] = (0, 0),
    held: float | None = None,
    lone: float | None = None,
    lone_gap: int = 0,
    lone_others: int = 1,
    carry: Carry | None = None,
) -> StreamState:
    """A stream's first state from the alarm scores of normal (validation) data;
    ``depth``: DSPOT's level window from the start, ``regime_depth``: after a regime
    change (the larger of the two is taken there); ``confirm``: the ranking score a
    flag also needs (``StreamState.confirm``); ``recent``: (span, gap) of the recent
    check (``StreamState.recent_span``); ``season``: (period, half) of the seasonal
    check (``StreamState.season_period``); ``held``: the ranking score a point below a
    limit held up by the bound must exceed (``StreamState.held``); ``lone``, ``lone_gap``,
    ``lone_others``: the lone check's level, gap and count (``StreamState.lone``);
    ``carry``: the carry's first state (``model/carry.py``)."""
    x = np.asarray(scores, dtype=float)
    x = x[np.isfinite(x)]
    drift_level = float(np.quantile(x, DRIFT_LEVEL))
    spot = fit_spot(x, risk, depth, bound_at_first_fit=True)  # model/spot.py, z_min
    return StreamState(
        spot,
        causal,
        depth,
        window,
        drift_level,
        min_run=min_run,
        regime_depth=regime_depth,
        confirm=confirm,
        recent_span=recent[0],
        recent_gap=recent[1],
        season_period=season[0],
        season_half=season[1],
        held=held,
        lone=lone,
        lone_gap=lone_gap,
        lone_others=lone_others,
        carry=carry,
    )


def stream_from_threshold(tail: Threshold, window: int, causal: bool) -> StreamState:
    """The first state of a model saved before streams existed (its threshold was fitted
    on the validation step scores): SPOT from that threshold, drift against its stored
    quantiles."""
    levels = np.linspace(0.0, 1.0, len(tail.reference))
    drift_level = float(np.interp(DRIFT_LEVEL, levels, tail.reference))
    return StreamState(spot_from_threshold(tail), causal, 0, window, drift_level)


@dataclass(frozen=True)
class StreamResult:
    flags: np.ndarray  # (n,) is_anomaly
    above: np.ndarray  # (n,) above the limit (flags: and the minimum run)
    limits: np.ndarray  # (n,) the score each point had to exceed (NaN: not scored)
    exceedance: np.ndarray  # (n,) P(a normal point's residual >= this one's)
    drift: np.ndarray  # (n,) the drift statistic after each point
    state: StreamState  # after the last point


def advance(state: StreamState, scores: np.ndarray) -> StreamResult:
    """Decide ``scores`` (n,) in order, NaN (causal warm-up) skipped."""
    x = np.asarray(scores, dtype=float)
    n, w = len(x), state.window
    stream = SpotStream(state.spot)
    recent = deque(state.scores, maxlen=max(w, 1))
    flagged = deque(state.flags, maxlen=max(w, 1))
    flags, limits, log = np.zeros(n, dtype=bool), np.full(n, np.nan), TailLog(n)
    above_limit = np.zeros(n, dtype=bool)
    drift, rebaselines, run, home = np.full(n, np.nan), state.rebaselines, state.run, state.home
    drift_bound = above(state.drift_level)  # a score over it counts in the drift
    high = sum(v > drift_bound for v in recent)
    n_over = sum(flagged)  # points of the window above the limit since the last rebaseline
    for i, score in enumerate(np.minimum(x, LARGEST).tolist()):
        if score != score:
            drift[i] = high / len(recent) if recent else np.nan
            continue
        tail = stream.tail
        over, limits[i], residual = stream.step(score)
        run = run + 1 if over else 0
        flags[i], above_limit[i] = run >= state.min_run, over
        log.record(i, tail, residual)
        if w:
            if len(recent) == w and recent[0] > drift_bound:
                high -= 1  # the oldest score leaves the window
            if len(flagged) == w and flagged[0]:
                n_over -= 1  # and its flag
            recent.append(score)
            flagged.append(over)
            high += score > drift_bound
            n_over += over
            if len(flagged) == w and n_over >= REGIME_SHARE * w:  # a new regime: refit
                if home is None:
                    home = stream.state()
                level = max(state.depth, state.regime_depth)
                stream = SpotStream(fit_spot(np.asarray(recent), stream.tail.risk, level))
                flagged.clear()
                n_over = 0
                rebaselines += 1
            elif home is not None and high <= SETTLED * w:  # the regime ended
                stream, home = SpotStream(home), None  # back to the threshold it replaced
                flagged.clear()
                n_over = 0
                rebaselines += 1
        drift[i] = high / len(recent) if recent else np.nan
    after = replace(
        state,
        spot=stream.state(),
        scores=list(recent) if w else [],
        flags=list(flagged) if w else [],
        rebaselines=rebaselines,
        seen=state.seen + int((~np.isnan(x)).sum()),
        run=run,
        home=home,
    )
    return StreamResult(flags, above_limit, limits, log.exceedance(), drift, after)
