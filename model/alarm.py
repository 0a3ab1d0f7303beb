"""The alarm decision: which score meets the threshold, the severity and the flags.

The ranking score ``score`` is smoothed (the step score averaged over half, once and
twice ``ModelConfig.smoothing`` steps, ``ranking_score``); the alarm's smoothed
score is the average over ``ModelConfig.smoothing`` steps. Smoothing removes
step-to-step noise and ranks anomalies far better (docs/quality.md), but it also
flattens a spike of a step or two. The threshold is therefore fitted on the
*unsmoothed* step scores of the validation data, and a point is flagged when

    alarm_score = max(unsmoothed score, smoothed score) > threshold

("above" beyond the scores' rounding, ``model.threshold.exceeds``), so a short spike
is flagged by its unsmoothed score and a long, moderate rise by its smoothed one.
Both are in nats on the same scale (the smoothed score is the moving average of the
unsmoothed one). Severity is the threshold's calibrated
severity of ``alarm_score``. Without smoothing both scores are the same.

**Confirmation.** A point above the limit is flagged only where the ranking score is
also above the ``ModelConfig.confirm_level`` quantile (95 %) of the validation's
ranking scores (``StreamState.confirm``, kept per kind of stream: series or causal).
The alarm score sees every variable in full and one width; the ranking score, with
the level floor of two-valued variables and three widths, ranks anomalies better,
and a point whose neighbourhood it finds no higher than the validation's top 5 % is
mostly an ordinary switch or a marginal spike in a quiet stretch. That check removes
many false alerts, for a few events that only such points reach (docs/quality.md).

**The recent check.** A confirmed point is flagged only where its ranking score is
also above the 90 % quantile (``RECENT_LEVEL``) of the ranking scores of the
``ModelConfig.recent_windows`` x T points that end one ranking width (2T) before it,
points above the limit left out (``recent_reference``): it must stand out from the
stream's recent past, not only from the validation. A series that has drifted to
scores above the confirmation level confirms its own noise, and each spike of that
noise starts an alert; the check drops most of them, while the start of an anomaly
rises above what came before it. The gap keeps a point's own neighbourhood (which its
ranking averages over) out of its reference; points above the limit are left out so
that a long anomaly does not raise its own bar. With fewer than half of the span's
points there (the start of a series, a long run above the limit) there is no check.
A stream keeps the last span + gap ranking scores in its state (``StreamState.recent``).

**The seasonal check.** Where the training data are periodic, a confirmed point is
flagged only where it, or the first point of its run above the limit, also stands out
from the same phase one period back (``model/season.py``): a daily pattern the model
has not fully learnt crosses the limit at the same hour each day, and the check keeps
it from paging each day; a long anomaly keeps its first point's verdict, so it is not
compared with its own start one period later. The stream keeps the last period + T/2
ranking scores (``StreamState.season``) and the verdict of the run going on.

**Below a limit held up.** SPOT's limit cannot fall below a bound (``model/spot.py``,
``z_min``), and where the bound holds it up, the tail's own ``1 - risk`` quantile is
lower: a point between the two has a severity of at least ``1 - risk`` but is not
above the limit. Such a point is flagged too where its ranking score is above the
``ModelConfig.held_level`` quantile of the validation's (their highest,
``StreamState.held``) and the stream's drift statistic after it is at most
``DRIFTING`` (over the scores so far at a stream's start; ``held_points``); it then
counts as a point above the limit for the recent and the seasonal checks, which it
passes like the others. SPOT, which decided it below the limit, takes it into its
tail as any such point. The bound keeps a limit refitted on a truncated tail from
falling for ever, but it also hid anomalies that the tail already finds rare; a
ranking score beyond anything in the validation, and no drift, keep out the ordinary
points that a truncated tail overrates (docs/quality.md). Only a stream has such a bound,
and only with ``min_run`` 1 are such points flagged.

**The lone check.** Then a flag with fewer than ``ModelConfig.lone_others`` (1) points
that passed the checks above within the T/2 points before it (the gap across which
flags make one event: the first point of an event, or a lone point) is kept only where
its ranking score is above the ``ModelConfig.lone_level`` quantile of the validation's
(their highest, ``StreamState.lone``) and, with the recent check, above the highest
ranking score of the recent check's span (``recent_reference`` at 1); an event that
starts lower pages from its second point. Most false alerts are one point long, with a
ranking score near the confirmation level or below the recent past's highest; the
start of an anomaly either rises beyond anything in the validation and the recent past,
or goes on. The price: an event that only one moderate point reaches (docs/quality.md;
``lone_others`` 2 also drops two-point runs). The stream keeps how long ago its last
``lone_others`` points that passed were (``StreamState.passed_ago``).

**The carry.** Last, in a stream scored as a series, a flagged run goes on while the
ranking score stays above its alert's bar, up to ``ModelConfig.carry_windows`` x T
points past the last point above the limit or flagged (``model/carry.py``,
``StreamState.carry``): a long anomaly stays flagged, not only its few points above
the limit, and a carried point never starts an alert.

The limit, SPOT's tail, the regime rule and severity see the alarm score alone, so a
point above the limit that is not confirmed still counts as one for them, as with
``min_run``.

Models saved before the alarm score existed, with smoothing on, had their
threshold fitted on smoothed validation scores; for them ``alarm_score`` is the
smoothed score, as it was when they were trained (see ``threshold_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from model.carry import Carry, carried
from model.config import ModelConfig
from model.levels import LevelFloor, Taken
from model.scoring import (
    SeriesScores,
    contributions,
    delayed,
    multiscale_average,
    ranking_width,
    score_last_points,
    score_series,
    smooth,
    step_scores,
    top_variables,
)
from model.season import seasonal_reference
from model.stream import (
    DRIFTING,
    StreamResult,
    StreamState,
    advance,
    regime_level_points,
    start_stream,
)
from model.threshold import Threshold, exceeds, fit_threshold

if TYPE_CHECKING:
    from model.engine import Engine

UNSMOOTHED = "unsmoothed"  # metadata["threshold_scores"] of every model trained now
SMOOTHED = "smoothed"  # older models trained with smoothing on
STREAM_SERIES, STREAM_CAUSAL = "series", "causal"  # the two kinds of stream a model starts
RECENT_LEVEL = 0.9  # quantile of the recent ranking scores a flag must be above


@dataclass(frozen=True)
class Scored:
    """Scores of one series (or window) in the model's terms, plus the alarm decision."""

    score: np.ndarray  # (n,) ranking score (ranking_score); higher = more anomalous, nats
    alarm_score: np.ndarray  # (n,) max(unsmoothed, smoothed score): what meets the threshold
    log_prob: np.ndarray  # (n, D) reconstruction log-probability per variable, nats (smoothed)
    kl: np.ndarray  # (n,) KL divergence of the covering windows, nats (smoothed)
    warm_up: np.ndarray  # (n,) fewer than T points of history
    severity: np.ndarray  # (n,) in [0, 1], 1 - estimated tail probability of alarm_score
    # (n,) alarm_score > limit and the ranking score confirms it (warm-up too: the flag
    # only informs)
    is_anomaly: np.ndarray
    contributions: np.ndarray  # (n, D) each variable's share of the step's excess surprise
    limit: np.ndarray  # (n,) the alarm score each point had to exceed (NaN: not scored)
    threshold: float  # the model's threshold, or a stream's limit after its last point

    def top(self, k: int) -> np.ndarray:
        return top_variables(self.contributions, k)

    @classmethod
    def stack(cls, parts: list[Scored]) -> Scored:
        """Results of equal length (arrays (n[, D])) as one batch (arrays (N, n[, D]))."""
        arrays = {
            f.name: np.stack([getattr(part, f.name) for part in parts])
            for f in fields(cls)
            if f.name != "threshold"
        }
        return cls(**arrays, threshold=parts[0].threshold)

    def pick(self, key: int | slice | None) -> Scored:
        """Index every array along its first axis: one window of a batch, or a tail
        (``None``, i.e. ``np.newaxis``, makes a batch of one)."""
        arrays = {f.name: getattr(self, f.name)[key] for f in fields(self) if f.name != "threshold"}
        return Scored(**arrays, threshold=self.threshold)


def threshold_scores(stored_config: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Which step scores a saved model's threshold was fitted on.

    Recorded in the metadata since the alarm score exists. Before, the threshold
    was fitted on the scores as smoothed by the model's config; a config without
    ``smooth_window`` predates smoothing, and ``smooth_window == 1`` is no smoothing.
    """
    if "threshold_scores" in metadata:
        return str(metadata["threshold_scores"])
    if stored_config.get("smooth_window", 1) == 1:
        return UNSMOOTHED
    return SMOOTHED


def alarm_score(raw: SeriesScores, smoothed: SeriesScores, fitted_on: str = UNSMOOTHED):
    """max(unsmoothed, smoothed score) (n,); the smoothed one for ``SMOOTHED`` models."""
    return smoothed.score if fitted_on == SMOOTHED else np.maximum(raw.score, smoothed.score)


def ranking_score(
    raw: SeriesScores,
    normalized: np.ndarray,
    levels: LevelFloor,
    config: ModelConfig,
    causal: bool,
    taken: Taken | None = None,
) -> np.ndarray:
    """The ranking score: the step score with the level floor of two-valued variables
    (``model/levels.py``; ``taken``: the values a stream took before, for the learned
    levels), averaged over half, once and twice the smoothing width
    (``multiscale_average``). Only the ranking has the floor and the wider kernel:
    log_prob, attribution and the alarm score keep the Gaussian's log-probability and
    the one smoothing width (with the floor, the alarm's threshold, fitted on quiet
    validation scores, came out too tight; docs/quality.md)."""
    log_prob = levels.apply(raw.log_prob, normalized, taken)  # as is without a floor
    score = step_scores(log_prob, raw.kl, config.window)
    axis = raw.kl.ndim - 1  # steps: (n,) for a series, (N, T) for windows
    # averages of the step score, not of log_prob (both linear): one column, not D
    return multiscale_average(score, config.smoothing, causal, axis)


def confirmed(flags: np.ndarray, ranking: np.ndarray | None, confirm: float | None) -> np.ndarray:
    """``flags`` where the ranking score is above ``confirm`` (the module doc); all of
    them without a confirmation level or a ranking score."""
    if confirm is None or ranking is None:
        return flags
    return flags & exceeds(ranking, confirm)


def held_points(result: StreamResult, ranking: np.ndarray | None, state: StreamState) -> np.ndarray:
    """The points of ``result`` below their limit but beyond the tail's ``1 - risk``
    quantile (a limit the bound holds up, ``model/spot.py``), whose ranking score is
    above ``state.held``, with the drift statistic at most ``DRIFTING`` (the module
    doc). No point without ``state.held`` or a ranking score, or with ``min_run`` above
    1."""
    if state.held is None or ranking is None or state.min_run > 1:
        return np.zeros(len(result.above), dtype=bool)
    beyond = result.exceedance < state.spot.tail.risk  # NaN: unscored, not beyond
    calm = ~(result.drift > DRIFTING)
    return beyond & ~result.above & calm & exceeds(ranking, state.held)


def recent_reference(
    ranking: np.ndarray,
    above: np.ndarray,
    past: list[float],
    span: int,
    gap: int,
    level: float = RECENT_LEVEL,
) -> tuple[np.ndarray, list[float]]:
    """Per point of ``ranking`` (n,), the ``level`` quantile of the ranking scores
    of the ``span`` points that end ``gap`` points before it, those ``above`` the limit
    (and unscored or infinite ones: a value beyond float32's range) left out; NaN where
    fewer than half of the span are left.
    ``past``: the ranking scores before ``ranking`` (NaN: left out), oldest first.
    Also returns the last span + gap scores, the ``past`` of the next chunk."""
    own = np.where(above | ~np.isfinite(ranking), np.nan, ranking)
    history = np.concatenate([np.asarray(past, dtype=float), own])
    rolling = pd.Series(history).rolling(span, min_periods=max(1, span // 2))
    quantile = rolling.quantile(level).to_numpy()  # [k]: the span ending at k
    reference = delayed(quantile, gap + 1)  # point k's: the span ending at k - gap - 1
    return reference[len(past) :], history[-(span + gap) :].tolist()


def recent_checked(
    flags: np.ndarray, ranking: np.ndarray | None, above: np.ndarray, state: StreamState
) -> tuple[np.ndarray, list[float], np.ndarray | None]:
    """``flags`` where the ranking score stands out from the recent past (the module
    doc, ``recent_reference``) after ``state.recent``; all of them without a check or a
    ranking score. Also returns the stream's next ``recent`` and each point's reference
    (None: no check)."""
    if not state.recent_span or ranking is None:
        return flags, state.recent, None
    span, gap = state.recent_span, state.recent_gap
    reference, recent = recent_reference(ranking, above, state.recent, span, gap)
    return flags & ~(reference >= ranking), recent, reference  # NaN: no reference, no check


def seasonal_checked(
    flags: np.ndarray, ranking: np.ndarray | None, above: np.ndarray, state: StreamState
) -> tuple[np.ndarray, list[float], bool, bool | None]:
    """``flags`` where the point, or the first point of its run ``above`` the limit,
    stands out from the same phase one period back (``model/season.py``) after
    ``state``: a daily pattern is dropped, a long anomaly is not compared with its own
    start one period later. All of them without a period or a ranking score. Also
    returns the stream's next ``season``, ``season_kept`` (the verdict of the run's
    first point) and ``season_open`` (the last point ``above``)."""
    if not state.season_period or ranking is None:
        return flags, state.season, state.season_kept, state.season_open
    period, half = state.season_period, state.season_half
    reference, season = seasonal_reference(ranking, state.season, period, half)
    stands = ~(reference >= ranking)  # NaN: no reference, no check
    # the runs above the limit: the first (0) goes on from the chunk before when the
    # state's last point was above the limit (states saved before: its run count)
    going = state.run > 0 if state.season_open is None else state.season_open
    starts = above & ~np.concatenate([[going], above[:-1]])
    first = np.concatenate([[state.season_kept], stands[starts]])[np.cumsum(starts)]
    kept = bool(first[-1]) if len(first) else state.season_kept
    still = bool(above[-1]) if len(above) else going
    return flags & (~above | first | stands), season, kept, still


def lone_checked(
    flags: np.ndarray, ranking: np.ndarray | None, above: np.ndarray, state: StreamState
) -> tuple[np.ndarray, list[int]]:
    """``flags`` where ``state.lone_others`` others of them (before this check) lie
    within ``state.lone_gap`` points before (``state.passed_ago`` reaches into the chunk
    before), or the ranking score is above ``state.lone`` and, with a recent check,
    above the highest ranking score of its recent span (``recent_reference``: ``above``
    the limit left out, none while too few are there; the module doc); all of them
    without a level or a ranking score, or with ``min_run`` above 1 (which asks for
    runs already). Also returns the stream's next ``passed_ago``."""
    if state.lone is None or ranking is None or state.min_run > 1:
        return flags, state.passed_ago
    n, gap = len(flags), state.lone_gap
    index = np.arange(n)
    # the points that passed, the chunk before's at negative positions, in order
    passed = np.concatenate([-np.asarray(state.passed_ago, dtype=int), np.flatnonzero(flags)])
    within = np.searchsorted(passed, index) - np.searchsorted(passed, index - gap)
    beyond = exceeds(ranking, state.lone)
    if state.recent_span:
        span, recent_gap = state.recent_span, state.recent_gap
        highest, _ = recent_reference(ranking, above, state.recent, span, recent_gap, 1.0)
        beyond &= ~(highest >= ranking)  # NaN: no recent past, the validation alone
    kept = flags & ((within >= state.lone_others) | beyond)
    ago = n - passed[passed >= n - gap][-state.lone_others :]  # to the next chunk's first point
    return kept, ago.tolist()


def decide(
    raw: SeriesScores,
    smoothed: SeriesScores,
    threshold: Threshold,
    baseline: np.ndarray,
    fitted_on: str = UNSMOOTHED,
    ranking: np.ndarray | None = None,
    checks: StreamState | None = None,
) -> Scored:
    """Alarm score, severity, flags and attribution from unsmoothed and smoothed results,
    against the model's fixed threshold. ``ranking``: the ranking score
    (``ranking_score``); without it, the smoothed score ranks. ``checks``: a new
    stream's state, whose confirmation level and recent check the flags also pass
    (``confirmed``, ``recent_checked``, ``seasonal_checked``, ``lone_checked``: the
    series is its own past)."""
    alarm = alarm_score(raw, smoothed, fitted_on)
    # NaN: causal warm-up, in both scores alike; +inf (a value far beyond float32's
    # range, log p = -inf) is the most anomalous score there is, and is flagged
    scored = ~np.isnan(alarm)
    severity = np.where(scored, threshold.severity(np.nan_to_num(alarm)), np.nan)
    over = scored & exceeds(np.nan_to_num(alarm), threshold.value)
    is_anomaly = over
    if checks is not None:
        is_anomaly = confirmed(over, ranking, checks.confirm)
        own = replace(
            checks, recent=[], season=[], season_kept=True, season_open=False, passed_ago=[]
        )
        is_anomaly, _, reference = recent_checked(is_anomaly, ranking, over, own)
        is_anomaly = seasonal_checked(is_anomaly, ranking, over, own)[0]
        is_anomaly = lone_checked(is_anomaly, ranking, over, own)[0]
        is_anomaly = carry_checked(is_anomaly, ranking, over, reference, own)[0]
    limit = np.where(scored, threshold.value, np.nan)
    parts = (alarm, severity, is_anomaly, baseline, limit, threshold.value)
    return _scored(smoothed, ranking, *parts)


def decide_stream(
    raw: SeriesScores,
    smoothed: SeriesScores,
    state: StreamState,
    baseline: np.ndarray,
    fitted_on: str = UNSMOOTHED,
    ranking: np.ndarray | None = None,
) -> tuple[Scored, StreamState]:
    """The same, the points decided in order by a stream's adaptive threshold
    (``model/stream.py``); severity is 1 - the exceedance probability under the stream's
    tail, flags confirmed by the ranking score against the state's ``confirm``, points
    below a limit held up by the bound added (``held_points``), and all of them checked
    against the recent past (``recent_checked``), the last period
    (``seasonal_checked``) and, where none passed just before, the validation
    (``lone_checked``). Returns the stream's state after the last point."""
    alarm = alarm_score(raw, smoothed, fitted_on)
    result = advance(state, alarm)
    severity = 1.0 - result.exceedance
    threshold = result.state.spot.limit
    held = held_points(result, ranking, state)
    above = result.above | held
    flags = confirmed(result.flags, ranking, state.confirm) | held
    flags, recent, reference = recent_checked(flags, ranking, above, state)
    flags, season, kept, still = seasonal_checked(flags, ranking, above, state)
    flags, passed_ago = lone_checked(flags, ranking, above, state)
    flags, carry = carry_checked(flags, ranking, above, reference, state)
    parts = (alarm, severity, flags, baseline, result.limits, threshold)
    scored = _scored(smoothed, ranking, *parts)
    after = replace(
        result.state,
        recent=recent,
        season=season,
        season_kept=kept,
        season_open=still,
        passed_ago=passed_ago,
        carry=carry,
    )
    return scored, after


def carry_checked(
    flags: np.ndarray,
    ranking: np.ndarray | None,
    above: np.ndarray,
    reference: np.ndarray | None,
    state: StreamState,
) -> tuple[np.ndarray, Carry | None]:
    """``flags`` and the points carried after them (``model/carry.py``), with the recent
    check's ``reference``; all of them as they are without a carry or a ranking score, or
    with ``min_run`` above 1. Also returns the stream's next carry."""
    if state.carry is None or ranking is None or state.min_run > 1:
        return flags, state.carry
    return carried(flags, ranking, above, reference, state.carry)


def fit_alarm(
    engine: Engine,
    normalized: np.ndarray,
    n_val: int,
    config: ModelConfig,
    levels: LevelFloor,
    period: int = 0,
) -> tuple[Threshold, dict[str, StreamState], np.ndarray]:
    """The alarm of a new model from its validation tail, the last ``n_val`` points of
    ``normalized`` (the points before them are its lead-in, up to 2T - 2 of them):

    - the fixed threshold, fitted on the unsmoothed step scores (smoothed ones are
      strongly autocorrelated and their tail fit comes out too tight);
    - the first state of a stream scored as series (``STREAM_SERIES``) and of one
      scored causally (``STREAM_CAUSAL``), from the alarm scores of each, with the
      confirmation level, the level of points below a held limit and the lone check's
      from the ranking scores of each (``confirm_level``, ``held_level``,
      ``lone_level``) and the seasonal check of
      ``period`` (0: none; ``model/season.py``);
    - the validation points' smoothed log-probabilities (n_val, D), for attribution.
    """
    window = config.window
    streams = {}
    for mode, causal in ((STREAM_SERIES, False), (STREAM_CAUSAL, True)):
        raw = (score_last_points if causal else score_series)(engine, normalized)
        smoothed = smooth(raw, config.smoothing, window, causal)
        ranking = ranking_score(raw, normalized, levels, config, causal)[-n_val:]
        carries = config.carry_windows and not causal  # model/carry.py: series only
        streams[mode] = start_stream(
            alarm_score(raw, smoothed)[-n_val:],
            config.risk,
            config.level_windows * window,
            config.regime_windows * window,
            causal=causal,
            min_run=config.min_run,
            regime_depth=regime_level_points(window),
            confirm=confirmation_level(ranking, config.confirm_level),
            recent=(config.recent_windows * window, ranking_width(config.smoothing)),
            season=(period, window // 2) if period else (0, 0),
            held=confirmation_level(ranking, config.held_level),
            lone=confirmation_level(ranking, config.lone_level),
            lone_gap=window // 2,  # the gap across which flags make one event
            lone_others=config.lone_others,
            carry=Carry.of_model(window, config.carry_windows, ranking) if carries else None,
        )
        if not causal:
            threshold = fit_threshold(raw.score[-n_val:], risk=config.risk)
            val_log_prob = smoothed.log_prob[-n_val:]
    return threshold, streams, val_log_prob


def confirmation_level(ranking: np.ndarray, level: float) -> float | None:
    """The ``level`` quantile of validation ranking scores (NaN, causal warm-up, left
    out); None for ``level`` 0 (no confirmation) or no finite score."""
    finite = ranking[np.isfinite(ranking)]
    if level == 0 or not len(finite):
        return None
    return float(np.quantile(finite, level))


def _scored(
    smoothed: SeriesScores,
    ranking: np.ndarray | None,
    alarm: np.ndarray,
    severity: np.ndarray,
    is_anomaly: np.ndarray,
    baseline: np.ndarray,
    limit: np.ndarray,
    threshold: float,
) -> Scored:
    return Scored(
        smoothed.score if ranking is None else ranking,
        alarm,
        smoothed.log_prob,
        smoothed.kl,
        smoothed.warm_up,
        severity,
        is_anomaly,
        contributions(smoothed.log_prob, baseline),
        limit,
        threshold,
    )
