"""Alarm and scoring variants compared on cached models (``bench/alarm_cache.py``).

Every variant maps a case's cached per-step results to a ranking score (all rows)
and flags (the rows after the training part); the table gives, per data set, the
ranking (VUS-PR, only with ``--vus``: ~2 s a file) and the flag and alert measures
of ``model/evaluation/alarm_quality.py``, as ``lvad evaluate`` reports them, then
each goal's measure as the mean over SMAP, MSL, SMD and NAB.

The stream variants decide the alarm score alone: they were measured before the
ranking score confirmed the flags (``model/alarm.py``); ``confirm<level>`` is the
stream with that confirmation, ``recent5`` ``confirm0.95`` with the recent check,
``seasonal`` ``recent5`` with the seasonal check, and ``held`` today's flags, as the
model decides them: ``seasonal``'s and the points below a limit held up by the bound on
the tail whose ranking score is above the validation's highest, through the lone check
(``held without-lone`` is without it; ``held others2`` asks a moderate flag for two
flags before it, not one). ``relative...`` sweep the recent check's quantile, span and
what it leaves out, with the rows before the test part as the first past;
``held`` also carries a series stream's runs (``model/carry.py``; ``held without-carry``
is without); ``held-carried<b>`` carries ``held without-carry``'s alerts on through long
anomalies in the bench's own code, ``rise<r>`` moving the bar towards the alert's
highest flag, ``series`` leaving causal streams as they are, ``fixed<q>`` and ``x<k>``
other levels (``held-carried1 rise0.25 series`` is the carry).

    .venv/bin/python bench/alarm_variants.py ../shared/data/tsbad-m --cache var/alarm-cache \\
        [--nab ../shared/data/nab] [--train-rows 500] [--vus] [--only NAME ...] [--csv PATH]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pandas as pd
from alarm_cache import Case, add_case_arguments, load_cases

import model.spot
import model.stream
import model.threshold
from model.alarm import (
    RECENT_LEVEL,
    confirmation_level,
    decide_stream,
    ranking_score,
    recent_reference,
    seasonal_checked,
)
from model.carry import Carry
from model.evaluation.alarm_quality import flag_quality, summarize
from model.evaluation.metrics import detection_metrics
from model.events import find_events
from model.scoring import (
    SeriesScores,
    moving_average,
    multiscale_average,
    ranking_width,
    smooth,
    step_scores,
)
from model.season import seasonal_reference
from model.spot import fit_spot
from model.stream import DRIFTING, StreamState, advance, regime_level_points, start_stream
from model.threshold import exceeds


@dataclass
class Outcome:
    score: np.ndarray  # (n,) ranking score of every row
    alarm: np.ndarray  # (n - n_train,) alarm score after the training part
    flags: np.ndarray  # (n - n_train,)
    gap: float = 0.5  # alerts: runs merged across gaps of up to this many windows


Variant = Callable[[Case], Outcome]


def raw_series(case: Case) -> SeriesScores:
    warm = np.arange(len(case.kl)) < case.window - 1
    return SeriesScores(
        case.log_prob, case.kl, step_scores(case.log_prob, case.kl, case.window), warm
    )


def stream_start(
    case: Case, scores: np.ndarray, risk: float = 1e-3, depth: int = 0, windows: int = 10, **options
) -> StreamState:
    """A stream's first state from validation alarm scores as ``fit_alarm`` starts a model's:
    W = ``windows`` model windows, DSPOT's level after a regime change over
    ``regime_level_points`` (``regime_depth`` in ``options`` overrides it), ``depth``
    points from the start."""
    options.setdefault("regime_depth", regime_level_points(case.window))
    return start_stream(scores, risk, depth, windows * case.window, **options)


def validation_results(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The validation tail's unsmoothed (log_prob, kl), scored the way the case's rows are
    (the last step of each window when causal)."""
    if case.causal:
        return case.val_last_log_prob, case.val_last_kl
    return case.val_log_prob, case.val_kl


def ranking(case: Case, floor: bool = True) -> np.ndarray:
    """The ranking score of every row, as ``Detector`` forms it (the step score averaged
    over half, once and twice the smoothing width), with the level floor unless
    ``floor`` is False (the Gaussian alone, as before the floor)."""
    log_prob = case.floored_log_prob if floor else case.log_prob
    score = step_scores(log_prob, case.kl, case.window)
    return multiscale_average(score, case.detector.config.smoothing, case.causal)


def shipped(case: Case) -> Outcome:
    """The fixed threshold (before streams): alarm = max(raw, smoothed) against the
    model's POT threshold; the ranking score with the level floor."""
    raw = raw_series(case)
    smoothed = smooth(raw, case.detector.config.smoothing, case.window, case.causal)
    alarm = np.fmax(raw.score, smoothed.score)[case.n_train :]
    flags = exceeds(np.nan_to_num(alarm, nan=-np.inf), case.detector.threshold.value)
    return Outcome(ranking(case), alarm, flags)


def floored(case: Case) -> Case:
    """The case with the level floor in every log_prob: the validation's (which start a
    stream) and the rows'."""
    return replace(
        case,
        log_prob=case.floored_log_prob,
        val_log_prob=case.floor.apply(case.val_log_prob, case.validation_values),
        val_last_log_prob=case.floor.apply(case.val_last_log_prob, case.validation_values),
    )


def floored_alarm(case: Case) -> Outcome:
    """Today's stream with the level floor in the alarm too: the validation's alarm
    scores (which start the stream) and the rows' alarm scores from floored log_prob."""
    return VARIANTS["q0.001 d0 w10"](floored(case))


def floored_rows(case: Case) -> Outcome:
    """Today's stream started from the Gaussian validation scores, deciding floored alarm
    scores: the threshold and the scores on different scales (commands count in full in
    the threshold's fit, bounded in the rows)."""
    return VARIANTS["q0.001 d0 w10"](replace(case, log_prob=case.floored_log_prob))


def training_floored(case: Case) -> np.ndarray:
    """``case.log_prob`` with the level floor at training values only: without the
    learned levels of variables held at one value in training (``model/levels.py``).
    Each row floored as a series of its own, whose one point has taken nothing before."""
    rows = case.floor.apply(case.log_prob[:, np.newaxis], case.values[:, np.newaxis])
    return rows[:, 0]


def training_levels(case: Case) -> Outcome:
    """Today's flags (``held``) and ranking with ``training_floored``, as before the
    learned levels."""
    return VARIANTS["held"](replace(case, floored_log_prob=training_floored(case)))


def learned_alarm(case: Case) -> Outcome:
    """Today's flags (``held``) with the learned levels in the alarm score too: a
    variable held at one value in training costs the alarm, at a value the series took
    before, at most a change at its training rate. The floor at training values stays
    out of the alarm; the validation, whose alarm scores start the stream, never takes
    a learned value, so the stream starts as today's."""
    learned = case.floored_log_prob > training_floored(case)  # the learned floor alone
    alarm_log_prob = np.where(learned, case.floored_log_prob, case.log_prob)
    return VARIANTS["held"](replace(case, log_prob=alarm_log_prob))


def gaussian(case: Case) -> Outcome:
    """Today's stream, and the ranking score without the level floor."""
    today = VARIANTS["q0.001 d0 w10"](case)
    return Outcome(ranking(case, floor=False), today.alarm, today.flags)


def alarm_scores(
    case: Case, validation: bool, alarm: str = "max", raw_width: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(ranking score, alarm score = max(raw, smoothed) or ``alarm`` = "smoothed") of the
    rows or of the validation tail; ``raw_width`` > 1: the raw score in the max is first
    averaged over that many steps (centred, trailing when causal). The ranking score of
    the rows has the level floor, the alarm never (the validation's ranking score is
    not used)."""
    log_prob, kl = validation_results(case) if validation else (case.log_prob, case.kl)
    warm = np.zeros(len(kl), dtype=bool)
    raw = SeriesScores(log_prob, kl, step_scores(log_prob, kl, case.window), warm)
    smoothed = smooth(raw, case.detector.config.smoothing, case.window, case.causal)
    score = smoothed.score if validation else ranking(case)
    if alarm == "smoothed":
        return score, smoothed.score
    short = moving_average(raw.score, raw_width, case.causal)
    return score, np.fmax(short, smoothed.score)


def streamed(
    risk: float,
    depth: int,
    window: int,
    alarm: str = "max",
    gap: float = 0.5,
) -> Variant:
    """The alarm score decided by a stream state started on the validation alarm scores;
    ``depth``, ``window`` and ``gap`` in model windows."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False, alarm)
        w = case.window
        start = stream_start(case, alarm_scores(case, True, alarm)[1], risk, depth * w, window)
        result = advance(start, scores[case.n_train :])
        return Outcome(score, scores[case.n_train :], result.flags, gap)

    return variant


def enough_hits(above: np.ndarray, hits: int, span: int) -> np.ndarray:
    """A point above its limit is flagged when at least ``hits`` of the last ``span``
    points (itself included) are above theirs: a causal minimum run (hits = span)."""
    counts = np.convolve(above.astype(int), np.ones(span, dtype=int))[: len(above)]
    return above & (counts >= hits)


def tuned(
    risk: float,
    init_level: float = 0.98,
    hits: int = 1,
    span: int = 1,
    share: float = model.stream.REGIME_SHARE,
) -> Variant:
    """Today's stream (plain SPOT, W = 10 windows) with another risk, another initial
    level of SPOT's tail (``init_level`` quantile, regime refits too), flags that need
    ``hits`` of the last ``span`` points above the limit (SPOT and the regime rule still
    see every point above it), or a refit once ``share`` of the regime window is above."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False)
        alarm = scores[case.n_train :]
        fit = partial(fit_spot, init_level=init_level)
        with (
            patch.object(model.stream, "fit_spot", fit),
            patch.object(model.stream, "REGIME_SHARE", share),
        ):
            validation = alarm_scores(case, True)[1]
            run = hits if hits == span else 1  # a minimum run: the stream's own
            result = advance(stream_start(case, validation, risk, min_run=run), alarm)
        flags = result.flags if hits == span else enough_hits(result.flags, hits, span)
        return Outcome(score, alarm, flags)

    return variant


def short_alarm(width: int) -> Variant:
    """Today's stream with the raw score in the alarm's max averaged over ``width`` steps:
    a lone one-step spike counts 1/width, a run of high steps in full."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False, raw_width=width)
        validation = alarm_scores(case, True, raw_width=width)[1]
        result = advance(stream_start(case, validation), scores[case.n_train :])
        return Outcome(score, scores[case.n_train :], result.flags)

    return variant


def two_tier(rarer: float) -> Variant:
    """Today's stream, but a point above the limit alone (not the second of a run) is only
    flagged when its exceedance probability is below ``risk / rarer``: one-point spikes
    page only when they are far out, runs of two or more at the usual limit. (A tail with
    fewer than 10 peaks, e.g. right after a regime refit, is the empirical quantile and
    gives no exceedance below 1 / (n + 1): there a lone point is never flagged.)"""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False)
        validation, risk = alarm_scores(case, True)[1], 1e-3
        result = advance(stream_start(case, validation, risk), scores[case.n_train :])
        strong = np.nan_to_num(result.exceedance, nan=1.0) < risk / rarer
        flags = enough_hits(result.flags, 2, 2) | (result.flags & strong)
        return Outcome(score, scores[case.n_train :], flags)

    return variant


def weighted(few_levels: float, cap: float | None = None) -> Variant:
    """Today's alarm, and a Gaussian ranking score (no level floor) whose variables with at
    most two distinct values in training (commands, switches) weigh ``few_levels``;
    ``cap``: each variable's -log p at most ``cap`` nats above its validation median."""

    def variant(case: Case) -> Outcome:
        nll = -case.log_prob
        if cap is not None:
            median = np.median(-case.val_log_prob, axis=0)
            nll = median + np.minimum(nll - median, cap)
        nll = nll * np.where(case.levels > 2, 1.0, few_levels)
        warm = np.zeros(len(case.kl), dtype=bool)
        raw = SeriesScores(-nll, case.kl, step_scores(-nll, case.kl, case.window), warm)
        score = smooth(raw, case.detector.config.smoothing, case.window, case.causal).score
        today = shipped(case)
        return Outcome(score, today.alarm, today.flags)

    return variant


def held(hold: float) -> Variant:
    """Today's stream with hysteresis: after a flagged point, the next points stay flagged
    while their exceedance probability under the stream's tail stays below ``hold``
    (the flag ends at the first point that is likelier than that)."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False)
        validation = alarm_scores(case, True)[1]
        result = advance(stream_start(case, validation), scores[case.n_train :])
        likely = np.nan_to_num(result.exceedance, nan=1.0)
        flags = result.flags.copy()
        for i in range(1, len(flags)):
            flags[i] |= flags[i - 1] and likely[i] < hold
        return Outcome(score, scores[case.n_train :], flags)

    return variant


def settled(share: float) -> Variant:
    """Today's stream with a regime ending once at most ``share`` of the window is above
    the validation's 98 % quantile (today: 0.02, the share expected there)."""

    def variant(case: Case) -> Outcome:
        with patch.object(model.stream, "SETTLED", share):
            return VARIANTS["q0.001 d0 w10"](case)

    return variant


def carry_runs(flags: np.ndarray, above: np.ndarray) -> np.ndarray:
    """``flags``, each run carried on while ``above`` holds."""
    carried, on = flags.copy(), False
    for i, flagged in enumerate(flags.tolist()):
        on = flagged or (on and bool(above[i]))
        carried[i] = on
    return carried


def carried(risk: float) -> Variant:
    """Today's stream, and a run of flags carried on while the *smoothed* score stays above
    the limit of a second stream of its own (plain SPOT at ``risk``, W = 10 windows,
    started on the validation's smoothed scores): a long anomaly stays flagged after its
    first points; a run still starts only where today's stream flags."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["q0.001 d0 w10"](case)
        smoothed = alarm_scores(case, False, "smoothed")[1][case.n_train :]
        validation = alarm_scores(case, True, "smoothed")[1]
        start = stream_start(case, validation, risk)
        above = advance(start, smoothed).flags
        return Outcome(today.score, today.alarm, carry_runs(today.flags, above))

    return variant


def calm_carried(bridge: float | None = None) -> Variant:
    """Today's flags (``held``), each run carried on while the ranking score stays above
    the validation's highest and the stream's drift statistic at most 0.5 (the
    conditions of a point below a held limit), and with ``bridge`` within ``bridge`` x T
    points of the last point above the limit: a long anomaly stays flagged after the
    few points its alarm score lifts above the limit."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["held"](case)
        rows = today.score[case.n_train :]
        result = advance(stream_start(case, alarm_scores(case, True)[1]), today.alarm)
        carry = exceeds(rows, validation_level(case, 1.0)) & ~(result.drift > DRIFTING)
        if bridge is not None:
            index = np.arange(len(rows))
            last = np.maximum.accumulate(np.where(result.above, index, -len(rows)))
            carry &= index - last <= bridge * case.window
        return Outcome(today.score, today.alarm, carry_runs(today.flags, carry))

    return variant


def hysteresis(factor: float, level: float = 0.95) -> Variant:
    """Today's flags (``held``), each run carried on while the alarm score's exceedance
    probability under the stream's tail stays below ``factor`` x risk (a lower limit to
    stay flagged than to start) and the ranking score above the ``level`` quantile of
    the validation's."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["held"](case)
        rows = today.score[case.n_train :]
        result = advance(stream_start(case, alarm_scores(case, True)[1]), today.alarm)
        lower = result.exceedance < factor * case.detector.config.risk
        carry = lower & exceeds(rows, validation_level(case, level))
        return Outcome(today.score, today.alarm, carry_runs(today.flags, carry))

    return variant


def regime_level(windows: float) -> Variant:
    """Today's stream with DSPOT's level after a regime change over ``windows`` x T points
    (0: the refitted threshold has no level, plain SPOT)."""

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False)
        depth = max(1, round(windows * case.window)) if windows else 0
        start = stream_start(case, alarm_scores(case, True)[1], regime_depth=depth)
        result = advance(start, scores[case.n_train :])
        return Outcome(score, scores[case.n_train :], result.flags)

    return variant


def free_shape(case: Case) -> Outcome:
    """Today's stream with the tail's shape fitted freely, as before ``MAX_SHAPE``."""
    with patch.object(model.threshold, "MAX_SHAPE", math.inf):
        return VARIANTS["q0.001 d0 w10"](case)


def tail_start(peaks: float, validation: bool) -> Variant:
    """Today's stream with SPOT's tail started low enough to leave ``peaks`` x MIN_PEAKS
    peaks (at most the 0.98 quantile, at least the median) when a regime refit fits it on
    the W scores of its window (320 scores: 6 peaks at 0.98, so the empirical quantile
    today), and with ``validation`` on the validation tail too."""

    def fit(scores: np.ndarray, risk: float, depth: int) -> model.spot.SpotState:
        level = 1 - peaks * model.spot.MIN_PEAKS / max(len(scores), 1)
        return fit_spot(scores, risk, depth, init_level=min(0.98, max(0.5, level)))

    def variant(case: Case) -> Outcome:
        score, scores = alarm_scores(case, False)
        validation_scores = alarm_scores(case, True)[1]
        with patch.object(model.stream, "fit_spot", fit if validation else fit_spot):
            start = stream_start(case, validation_scores)
        with patch.object(model.stream, "fit_spot", fit):
            result = advance(start, scores[case.n_train :])
        return Outcome(score, scores[case.n_train :], result.flags)

    return variant


def kernel(*widths: int, scaled: bool = False) -> Variant:
    """Today's alarm, and the ranking score (with the level floor) averaged over each of
    ``widths`` steps (absolute: T = 32 by default) and the averages' mean taken (today:
    16, 32 and 64); ``scaled``: each average as (s - median) / MAD of the same average on
    the validation tail (its causal scores for a causal case), and the largest taken."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["q0.001 d0 w10"](case)

        def average(log_prob: np.ndarray, kl: np.ndarray, width: int, causal: bool):
            return moving_average(step_scores(log_prob, kl, case.window), width, causal)

        rows = [average(case.floored_log_prob, case.kl, w, case.causal) for w in widths]
        if not scaled:
            return Outcome(np.mean(rows, axis=0), today.alarm, today.flags)
        val_log_prob, val_kl = validation_results(case)
        val_log_prob = case.floor.apply(val_log_prob, case.validation_values)
        parts = []
        for width, row in zip(widths, rows, strict=True):
            validation = average(val_log_prob, val_kl, width, case.causal)
            median = np.nanmedian(validation)
            spread = np.nanmedian(np.abs(validation - median)) + 1e-9
            parts.append((row - median) / spread)
        return Outcome(np.max(parts, axis=0), today.alarm, today.flags)

    return variant


def own_alarm(alarm: Callable[[Case, np.ndarray], np.ndarray], risk: float = 1e-3) -> Variant:
    """Today's stream (at ``risk``) deciding another alarm score, ``alarm(case, step
    scores)``, formed alike for the validation tail (which starts the stream) and for
    the rows."""

    def variant(case: Case) -> Outcome:
        def form(log_prob: np.ndarray, kl: np.ndarray) -> np.ndarray:
            return alarm(case, step_scores(log_prob, kl, case.window))

        validation = form(*validation_results(case))
        rows = form(case.log_prob, case.kl)[case.n_train :]
        result = advance(stream_start(case, validation, risk), rows)
        return Outcome(ranking(case), rows, result.flags)

    return variant


def kernel_alarm(with_raw: bool, floor: bool = False, risk: float = 1e-3) -> Variant:
    """Today's stream deciding the ranking's kernel (the step score averaged over T/2, T
    and 2T) in the alarm's max in place of the average over T, or (``with_raw`` False)
    alone; with ``floor``, of the floored step scores (validation and rows alike): the
    ranking score itself as the alarm."""

    def alarm(case: Case, step: np.ndarray) -> np.ndarray:
        wide = multiscale_average(step, case.detector.config.smoothing, case.causal)
        return np.fmax(step, wide) if with_raw else wide

    variant = own_alarm(alarm, risk)
    return (lambda case: variant(floored(case))) if floor else variant


def edge_trimmed(width: float) -> Variant:
    """Today's stream with the smoothed score in the alarm's max (series mode) replaced by
    the lower of the trailing and the leading average over ``width`` x T steps: both
    cover a point inside a long rise, only one the normal points at its edges, which the
    centred average flags up to T/2 steps out. Causal streams keep their trailing one."""

    def alarm(case: Case, step: np.ndarray) -> np.ndarray:
        if case.causal:
            return np.fmax(step, moving_average(step, case.detector.config.smoothing, True))
        w = max(1, int(width * case.detector.config.smoothing))
        trailing = moving_average(step, w, True)
        leading = moving_average(step[::-1], w, True)[::-1]
        return np.fmax(step, np.fmin(trailing, leading))

    return own_alarm(alarm)


def trimmed_average(values: np.ndarray, width: int, causal: bool, drop: float) -> np.ndarray:
    """``moving_average`` without each window's highest ``drop`` share of steps: one
    extreme step no longer lifts its whole window. NaN (causal warm-up) is skipped."""
    before = width - 1 if causal else width // 2
    padded = np.pad(values, (before, width - 1 - before), mode="edge")
    windows = np.sort(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)
    valid = (~np.isnan(windows)).sum(axis=1)
    keep = np.maximum(valid - np.floor(drop * valid).astype(int), 1)
    sums = np.cumsum(np.nan_to_num(windows), axis=1)
    mean = sums[np.arange(len(values)), keep - 1] / keep
    return np.where(np.isnan(values), np.nan, mean)


def trimmed(drop: float) -> Variant:
    """Today's stream with the smoothed score in the alarm's max a trimmed mean: each
    window's highest ``drop`` share of step scores left out, so a single huge step
    (flagged by its own score) does not flag the T points around it too."""

    def alarm(case: Case, step: np.ndarray) -> np.ndarray:
        width = case.detector.config.smoothing
        return np.fmax(step, trimmed_average(step, width, case.causal, drop))

    return own_alarm(alarm)


def confirmed(level: float) -> Variant:
    """Today's stream, its flags kept where the ranking score is above the ``level``
    quantile of the validation's ranking scores (1: their highest), as
    ``model/alarm.py`` confirms them."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["q0.001 d0 w10"](case)
        rows = today.score[case.n_train :]
        confirm = validation_level(case, level)
        return Outcome(today.score, today.alarm, today.flags & exceeds(rows, confirm))

    return variant


def validation_ranking(case: Case) -> np.ndarray:
    """The validation's ranking scores, as ``fit_alarm`` forms them."""
    log_prob, kl = validation_results(case)
    warm = np.zeros(len(kl), dtype=bool)
    raw = SeriesScores(log_prob, kl, step_scores(log_prob, kl, case.window), warm)
    config, values = case.detector.config, case.validation_values
    return ranking_score(raw, values, case.floor, config, case.causal)


def validation_level(case: Case, level: float) -> float:
    """The ``level`` quantile of the validation's ranking scores (``confirmation_level``)."""
    return confirmation_level(validation_ranking(case), level)


def checked_starts(flags: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``flags`` where ``keep`` holds, except that a point continuing a flagged run is
    kept whatever ``keep`` says: only a run's start is checked."""
    checked, on = flags.copy(), False
    for i, (flagged, stands) in enumerate(zip(flags.tolist(), keep.tolist(), strict=True)):
        on = flagged and (stands or on)
        checked[i] = on
    return checked


def relative(
    q: float = RECENT_LEVEL,
    spans: int = 5,
    neighbours: int = 0,
    history: bool = True,
    starts: bool = False,
) -> Variant:
    """``confirm0.95``'s flags, then the recent check of ``model/alarm.py``
    (``recent_reference``): the ``q`` quantile of the ranking scores of the last
    ``spans`` x T points, the points above the limit left out, and with ``neighbours``
    the ``neighbours`` x T points on either side of them too. ``history``: the rows
    before the test part are the first past (without it none, as ``lvad evaluate``
    streams: today's ``recent5``); ``starts``: a point continuing a flagged run is not
    checked."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["confirm0.95"](case)
        above = VARIANTS["q0.001 d0 w10"](case).flags  # min_run 1: the points above the limit
        if neighbours:
            width = 2 * neighbours * case.window + 1
            above = np.convolve(above, np.ones(width), "same") > 0
        rows, n_train = today.score[case.n_train :], case.n_train
        past = today.score[:n_train].tolist() if history else []
        span, gap = spans * case.window, ranking_width(case.detector.config.smoothing)
        reference, _ = recent_reference(rows, above, past, span, gap, q)
        keep = ~(reference >= rows)
        flags = checked_starts(today.flags, keep) if starts else today.flags & keep
        return Outcome(today.score, today.alarm, flags)

    return variant


def confirm_carried(carry: float, level: float = 0.95) -> Variant:
    """Today's confirmed flags (``confirm<level>``), a run carried on while the ranking
    score stays above the ``carry`` quantile of the validation's ranking scores: a long
    anomaly stays flagged after its first points."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS[f"confirm{level:g}"](case)
        above = exceeds(today.score[case.n_train :], validation_level(case, carry))
        return Outcome(today.score, today.alarm, carry_runs(today.flags, above))

    return variant


def seasonal(half: float = 0.5, points: bool = False) -> Variant:
    """``recent5``'s flags, a run above the limit kept where its first point's ranking
    score is above the highest within ``half`` x T points of the same phase one period
    back, in files whose training part has a period (``model/alarm.py``,
    ``seasonal_checked``); ``points``: every point checked for itself instead."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["recent5"](case)
        if not case.period:
            return today
        rows, h = today.score[case.n_train :], int(half * case.window)
        if points:
            reference, _ = seasonal_reference(rows, [], case.period, h)
            return Outcome(today.score, today.alarm, today.flags & ~(reference >= rows))
        above = VARIANTS["q0.001 d0 w10"](case).flags  # the points above the limit
        state = stream_start(case, alarm_scores(case, True)[1])
        state = replace(state, season_period=case.period, season_half=h)
        flags, *_ = seasonal_checked(today.flags, rows, above, state)
        return Outcome(today.score, today.alarm, flags)

    return variant


def carry_bars(
    case: Case, rows: np.ndarray, above: np.ndarray, q: float, windows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the ranking score ``rows``: the recent check's reference
    (``recent_reference`` over 5T, the points ``above`` the limit left out), and the
    ``q`` quantile of the last ``windows`` x T ranking scores before it not above the
    limit (the validation's first): the two bars a carried run must stay above."""
    w = case.window
    gap = ranking_width(case.detector.config.smoothing)
    reference, _ = recent_reference(rows, above, [], 5 * w, gap)
    validation = validation_ranking(case)
    own = np.where(above | ~np.isfinite(rows), np.nan, rows)
    history = pd.Series(np.concatenate([validation, own]))
    level = history.rolling(windows * w, min_periods=1).quantile(q).to_numpy()
    return reference, level[len(validation) - 1 : -1]  # the points before each row


def extended(bridge: float = 1.0, q: float = 0.99, windows: int = 100) -> Variant:
    """``recent5``'s flags, each alert's run carried on while the ranking score stays
    above the higher of its recent reference (``recent_reference``) at the alert's start
    and the ``q`` quantile of the last ``windows`` x T ranking scores not above the limit
    (the validation's first), and within ``bridge`` x T points of the last point above
    the limit; an alert without a recent reference is not carried (most of its past
    was above the limit: a drifted series). Longer flags inside long anomalies."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["recent5"](case)
        above = VARIANTS["q0.001 d0 w10"](case).flags  # the points above the limit
        rows, w = today.score[case.n_train :], case.window
        reference, level = carry_bars(case, rows, above, q, windows)
        flags = today.flags.copy()
        for start, _ in find_events(today.flags, w // 2):
            if not np.isfinite(reference[start]):
                continue
            bar, last = max(level[start], reference[start]), start
            for i in range(start, len(rows)):
                last = i if above[i] else last
                if not rows[i] > bar or i - last > bridge * w:
                    break
                flags[i] = True
        return Outcome(today.score, today.alarm, flags)

    return variant


def below_held(
    level: float | None = 1.0,
    drift: bool = True,
    lone: float | None = 1.0,
    others: int = 1,
    clip: float | None = None,
    risk: float = 1e-3,
    alone: int = 0,
    carry: bool = True,
) -> Variant:
    """Today's flags as the model decides them (``model/alarm.py``, ``decide_stream``):
    ``seasonal``'s, and the points below a limit that the bound on the tail holds up,
    beyond the tail's quantile, whose ranking score is above the ``level`` quantile of
    the validation's while the stream's drift statistic is at most 0.5 (None: no such
    points, which gives ``seasonal``'s flags but for the lone check; ``drift`` False:
    whatever the drift); then the lone check: a flag with fewer than ``others`` others
    within T/2 points before it kept where its ranking score is above the ``lone``
    quantile of the validation's (None: no such check). ``clip``: the smoothed score in
    the alarm's max averages the step scores cut at ``clip`` x the model's threshold
    (validation and rows alike), so that one huge step is flagged by its own score
    without lifting the average of the T points around it; with ``alone``, only a step
    with no other above the cut within ``alone`` points either side (series only: a
    causal stream keeps its average). ``risk``: the stream's. ``carry``: a series stream
    carries its runs (``model/carry.py``; ``held without-carry`` is without)."""

    def clipped(case: Case, raw: SeriesScores) -> np.ndarray:
        """The alarm score of ``raw``: max(step score, average of the cut step scores)."""
        cut_at = clip * case.detector.threshold.value
        cut = np.minimum(raw.score, cut_at)
        if alone:
            high = np.nan_to_num(raw.score, nan=-np.inf) > cut_at
            near = np.convolve(high, np.ones(2 * alone + 1), "same") - high
            cut = raw.score if case.causal else np.where(high & (near == 0), cut, raw.score)
        average = moving_average(cut, case.detector.config.smoothing, case.causal)
        return np.fmax(raw.score, average)

    def variant(case: Case) -> Outcome:
        today = VARIANTS["recent5"](case)
        rows, w, n_train = today.score[case.n_train :], case.window, case.n_train
        smoothing = case.detector.config.smoothing
        start = alarm_scores(case, True)[1]
        if clip is not None:
            log_prob, kl = validation_results(case)
            warm = np.zeros(len(kl), dtype=bool)
            start = clipped(case, SeriesScores(log_prob, kl, step_scores(log_prob, kl, w), warm))
        state = stream_start(
            case,
            start,
            risk,
            confirm=validation_level(case, 0.95),
            recent=(5 * w, ranking_width(smoothing)),
            season=(case.period, w // 2) if case.period else (0, 0),
            held=None if level is None else validation_level(case, level),
            lone=None if lone is None else validation_level(case, lone),
            lone_gap=w // 2,
            lone_others=others,
            carry=starting_carry(case) if carry and not case.causal else None,
        )
        raw = raw_series(case)
        smoothed = smooth(raw, smoothing, w, case.causal)
        if clip is not None:
            smoothed = replace(smoothed, score=clipped(case, raw))
        smoothed = smoothed.pick(slice(n_train, None))
        baseline = np.zeros(case.log_prob.shape[1])
        with patch("model.alarm.DRIFTING", 0.5 if drift else math.inf):
            scored, _ = decide_stream(
                raw.pick(slice(n_train, None)), smoothed, state, baseline, ranking=rows
            )
        return Outcome(today.score, today.alarm, scored.is_anomaly)

    return variant


def starting_carry(case: Case) -> Carry:
    """A series stream's first carry, as ``fit_alarm`` starts it."""
    windows = case.detector.config.carry_windows
    return Carry.of_model(case.window, windows, validation_ranking(case))


def carried_held(
    bridge: float = 1.0,
    q: float = 0.99,
    windows: int = 100,
    after: int = 1,
    rise: float = 0.0,
    causal: bool = True,
    fixed: bool = False,
) -> Variant:
    """``held without-carry``'s flags, each alert's run carried on as ``extended`` carries
    ``recent5``'s: while the ranking score stays above the bar of the alert's start and
    within ``bridge`` x T points of the last point above the limit or flagged; only once
    the alert has ``after`` flags (most false alerts have one or two). ``rise``: the bar
    is moved by that share of the way from it towards the alert's highest flagged
    ranking score, so that the decay after a lone spike (whose ranking score falls over 2T)
    ends the carry sooner than the plateau of a long anomaly. ``causal`` False: a causal
    stream is not carried (its trailing ranking score holds an anomaly's height for 2T
    past its end). ``fixed``: the ``q`` quantile of the validation's ranking scores
    alone, instead of the last ``windows`` x T."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["held without-carry"](case)
        if case.causal and not causal:
            return today
        above = VARIANTS["q0.001 d0 w10"](case).flags  # the points above the limit
        rows, w = today.score[case.n_train :], case.window
        reference, level = carry_bars(case, rows, above, q, windows)
        if fixed:
            level = np.full(len(rows), validation_level(case, q))
        flags, carrying, count = today.flags.copy(), False, 0
        bar, peak, last, seen = math.nan, math.nan, -len(rows), -len(rows)
        for i in range(len(rows)):
            if today.flags[i]:
                if i - seen > w // 2:  # an alert: its bar (NaN without a recent past)
                    bar = max(level[i], reference[i]) if np.isfinite(reference[i]) else math.nan
                    count, peak = 0, rows[i]
                seen = last = i
                count += 1
                peak = max(peak, rows[i])
                carrying = count >= after
            else:
                lifted = bar + rise * (peak - bar)
                carrying = carrying and rows[i] > lifted and i - last <= bridge * w
                flags[i] = carrying
            last = i if above[i] else last
        return Outcome(today.score, today.alarm, flags)

    return variant


def ranking_path(risk: float = 1e-4) -> Variant:
    """``seasonal``'s flags, and also the points where the ranking score is above a SPOT
    limit of its own (``ranking-alarm alone`` at ``risk``: started on the validation's
    ranking scores, with the regime rule), both through the recent and the seasonal
    checks (those points left out of the references as the points above the limit):
    a second path on the score that ranks the events, for the rows of long events that
    the alarm score leaves below its limit."""
    own = kernel_alarm(with_raw=False, floor=True, risk=risk)

    def variant(case: Case) -> Outcome:
        today = VARIANTS["recent5"](case)
        rows, w = today.score[case.n_train :], case.window
        above_alarm = VARIANTS["q0.001 d0 w10"](case).flags
        above_ranking = own(case).flags
        above = above_alarm | above_ranking
        flags = (above_alarm & exceeds(rows, validation_level(case, 0.95))) | above_ranking
        gap = ranking_width(case.detector.config.smoothing)
        reference, _ = recent_reference(rows, above, [], 5 * w, gap)
        flags &= ~(reference >= rows)
        if case.period:
            state = stream_start(case, alarm_scores(case, True)[1], season=(case.period, w // 2))
            flags, *_ = seasonal_checked(flags, rows, above, state)
        return Outcome(today.score, today.alarm, flags)

    return variant


def raw_floor(level: float) -> Variant:
    """Today's flags (``recent5``), kept where the point's own unsmoothed step score is
    also above the ``level`` quantile of the validation's: the smoothed alarm score and
    the ranking score stay high up to T/2 and T steps past an anomaly, whose quiet
    neighbours they flag."""

    def variant(case: Case) -> Outcome:
        today = VARIANTS["recent5"](case)
        log_prob, kl = validation_results(case)
        floor = np.nanquantile(step_scores(log_prob, kl, case.window), level)
        own = raw_series(case).score[case.n_train :]
        return Outcome(today.score, today.alarm, today.flags & (np.nan_to_num(own) > floor))

    return variant


SWEEP = {
    "risk1e-3": tuned(1e-3),
    "risk3e-3": tuned(3e-3),
    "risk2e-3": tuned(2e-3),
    "risk1e-2": tuned(1e-2),
    "risk2e-3 init0.99": tuned(2e-3, 0.99),
    "risk3e-3 init0.99": tuned(3e-3, 0.99),
    "init0.95": tuned(1e-3, 0.95),
    "init0.99": tuned(1e-3, 0.99),
    "run2": tuned(1e-3, hits=2, span=2),
    "run3": tuned(1e-3, hits=3, span=3),
    "2of3": tuned(1e-3, hits=2, span=3),
    "3of5": tuned(1e-3, hits=3, span=5),
    "risk3e-3 run2": tuned(3e-3, hits=2, span=2),
    "risk3e-3 run3": tuned(3e-3, hits=3, span=3),
    "risk1e-2 run3": tuned(1e-2, hits=3, span=3),
    "init0.95 run2": tuned(1e-3, 0.95, hits=2, span=2),
    **{f"share{share:g}": tuned(1e-3, share=share) for share in (0.25, 0.4, 0.5)},
    "short3": short_alarm(3),
    "short6": short_alarm(6),
    "tier10": two_tier(10),
    "tier100": two_tier(100),
    "gaussian": gaussian,
    "training-levels": training_levels,
    "learned-alarm": learned_alarm,
    "floored-alarm": floored_alarm,
    "floored-rows": floored_rows,
    "hold0.02": held(0.02),
    "hold0.01": held(0.01),
    "hold0.05": held(0.05),
    "end0.04": settled(0.04),
    "end0.1": settled(0.1),
    "end-never": settled(-1.0),
    "binary0": weighted(0.0),
    "binary0.1": weighted(0.1),
    "cap20": weighted(1.0, 20.0),
    "cap100": weighted(1.0, 100.0),
    "carried1e-3": carried(1e-3),
    "carried1e-2": carried(1e-2),
    "carried-calm": calm_carried(),
    "carried-calm2": calm_carried(2.0),
    **{f"hysteresis{f:g}": hysteresis(f) for f in (10, 30)},
    "free-shape": free_shape,
    **{f"regime-level{w:g}": regime_level(w) for w in (0, 0.125, 0.5, 1, 2)},
    "tail-start2": tail_start(2, validation=False),
    "tail-start2 all": tail_start(2, validation=True),
    "tail-start4 all": tail_start(4, validation=True),
    **{f"width{width}": kernel(width) for width in (16, 32, 40, 48, 64)},
    "kernel32-64": kernel(32, 64),
    "kernel32-128": kernel(32, 128),
    "kernel16-32-64": kernel(16, 32, 64),
    "kernel32-64 scaled": kernel(32, 64, scaled=True),
    "kernel16-32-64 scaled": kernel(16, 32, 64, scaled=True),
    "kernel-alarm": kernel_alarm(with_raw=True),
    "kernel-alarm alone": kernel_alarm(with_raw=False),
    **{f"confirm{level:g}": confirmed(level) for level in (0.8, 0.9, 0.95, 0.98, 0.99, 1.0)},
    **{f"relative{q:g}": relative(q) for q in (0.5, 0.75, 0.9, 1.0)},
    "relative0.9 x10": relative(spans=10),
    "relative0.9 neighbours1": relative(neighbours=1),
    "relative0.9 starts": relative(starts=True),
    **{f"recent{w}": relative(spans=w, history=False) for w in (3, 5, 10)},
    "seasonal": seasonal(),
    "seasonal1": seasonal(1.0),
    "seasonal points": seasonal(points=True),
    "held": below_held(),
    "held0.99": below_held(0.99),
    "held0.95": below_held(0.95),
    "held any-drift": below_held(drift=False),
    "held without-lone": below_held(lone=None),
    "held without-carry": below_held(carry=False),
    "held lone0.99": below_held(lone=0.99),
    **{f"held others{k}": below_held(others=k) for k in (2, 3, 5)},
    **{f"held clip{c:g}": below_held(clip=c) for c in (1, 10)},
    **{f"held risk{r:g}": below_held(risk=r) for r in (3e-4, 2e-3, 5e-3)},
    **{f"held clip{c:g} alone{k}": below_held(clip=c, alone=k) for c in (1, 3, 10) for k in (1, 3)},
    "ranking-path": ranking_path(),
    **{f"extended{b:g}": extended(b) for b in (0.5, 1, 2)},
    **{f"held-carried{b:g}": carried_held(b) for b in (0.5, 1, 2)},
    **{f"held-carried1 after{k}": carried_held(1, after=k) for k in (3, 10)},
    **{f"held-carried1 rise{r:g}": carried_held(1, rise=r) for r in (0.25, 0.5, 0.75)},
    **{
        f"held-carried{b:g} rise{r:g} series": carried_held(b, rise=r, causal=False)
        for b in (0.5, 1, 2, 4)
        for r in (0, 0.25, 0.5)
    },
    **{
        f"held-carried1 rise0.25 series x{k}": carried_held(1, windows=k, rise=0.25, causal=False)
        for k in (10, 20, 40)
    },
    **{
        f"held-carried1 rise{r:g} series fixed{q:g}": carried_held(
            1, q=q, rise=r, causal=False, fixed=True
        )
        for r in (0, 0.25)
        for q in (0.99, 1)
    },
    **{f"raw-floor{q:g}": raw_floor(q) for q in (0.5, 0.75, 0.9, 0.95)},
    **{f"carry{c:g}": confirm_carried(c) for c in (0.9, 0.95, 0.99)},
    "ranking-alarm": kernel_alarm(with_raw=True, floor=True),
    "ranking-alarm alone": kernel_alarm(with_raw=False, floor=True),
    "ranking-alarm alone q1e-4": kernel_alarm(with_raw=False, floor=True, risk=1e-4),
    **{f"edge-trim{w:g}": edge_trimmed(w) for w in (0.5, 1)},
    **{f"trimmed{d:g}": trimmed(d) for d in (0.03125, 0.0625, 0.25)},
}

VARIANTS: dict[str, Variant] = {
    "shipped": shipped,
    **{
        f"q{risk:g} d{depth} w{window}": streamed(risk, depth, window)
        for risk in (1e-3, 1e-4)
        for depth in (0, 1, 4, 10)
        for window in (0, 4, 10, 30)
    },
    **{
        f"{alarm} q{risk:g} w{window} gap{gap:g}": streamed(risk, 0, window, alarm, gap)
        for alarm in ("max", "smoothed")
        for risk in (1e-3, 1e-4)
        for window in (4, 10)
        for gap in (0.5, 2)
    },
    **SWEEP,
}


def measure(case: Case, variant: Variant, vus: bool) -> dict:
    out = variant(case)
    labels = case.labels[case.n_train :]
    row = {"file": case.name, "dataset": case.dataset}
    gap = int(out.gap * case.window)
    ranking = out.score[case.n_train :]
    row.update(flag_quality(out.alarm, out.flags, labels, case.window, gap, ranking=ranking))
    if vus:
        score = np.nan_to_num(out.score, nan=np.nanmin(out.score))
        row["vus_pr"] = detection_metrics(score, case.labels, case.slide)["VUS-PR"]
    return row


def compare(cases: list[Case], names: list[str], vus: bool) -> pd.DataFrame:
    tables = []
    for name in names:
        frame = pd.DataFrame([measure(case, VARIANTS[name], vus) for case in cases])
        table = summarize(frame, "dataset")
        if vus:
            table.insert(2, "vus_pr", frame.groupby("dataset")["vus_pr"].mean().to_numpy())
        table.insert(0, "variant", name)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


GOAL_SETS = ("SMAP", "MSL", "SMD", "NAB")  # the data sets the goals of issue 22 name
GOALS = {  # column: (bound, the goal holds above it)
    "normal_flagged": (0.02, False),
    "normal_flagged_median": (0.01, False),
    "f1_ratio": (0.7, True),
    "false_alerts": (2.0, False),
    "alert_recall": (0.8, True),
}


def goal_means(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant: each goal's measure as the mean over ``GOAL_SETS`` (each set weighs
    the same), and on how many of them the goal is met."""
    part = table[table["dataset"].isin(GOAL_SETS)]
    columns = [*GOALS, "event_recall"]
    means = part.groupby("variant", sort=False)[columns].mean()
    for column, (bound, above) in GOALS.items():
        met = part[column] >= bound if above else part[column] <= bound
        means[f"{column}_met"] = met.groupby(part["variant"], sort=False).sum()
    return means.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_case_arguments(parser)
    parser.add_argument("--vus", action="store_true")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="variants (prefixes)")
    parser.add_argument("--csv", type=Path, help="write the per-data-set table here")
    args = parser.parse_args()
    cases = load_cases(args)
    names = [name for name in VARIANTS if any(name.startswith(p) for p in args.only)]
    table = compare(cases, names, args.vus)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nmean over {', '.join(GOAL_SETS)} (and goals met of {len(GOAL_SETS)}):")
    print(goal_means(table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
