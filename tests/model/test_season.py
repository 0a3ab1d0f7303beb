"""The flags' seasonal check: a flag must stand out from the same phase one period back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.alarm import seasonal_checked
from model.detector import Detector
from model.errors import ArtifactError
from model.season import detect_period, seasonal_reference
from model.stream import StreamState, start_stream
from tests.conftest import TINY
from tests.model.test_recent import assert_bounded, assert_kept_as_json

PERIOD, HALF = 48, 8


def expected_verdict(above: np.ndarray, ranking: np.ndarray, period: int, half: int):
    """Per point above the limit, whether it or the first point of its run stands out
    from the same phase one period back (``expected_seasonal``); True elsewhere."""
    stands = ~(expected_seasonal(ranking, period, half) >= ranking)
    verdict = np.ones(len(above), dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(int), [0]])))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        verdict[start:end] = stands[start] | stands[start:end]
    return verdict


def expected_seasonal(ranking: np.ndarray, period: int, half: int) -> np.ndarray:
    """The reference computed point by point, as the check is specified."""
    reference = np.full(len(ranking), np.nan)
    for k in range(len(ranking)):
        begin, end = max(0, k - period - half), max(0, k - period + half + 1)
        window = ranking[begin:end][np.isfinite(ranking[begin:end])]
        if len(window) >= half + 1:
            reference[k] = window.max()
    return reference


def daily(n: int, period: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / period)[:, None] + noise * rng.standard_normal((n, 1))


def test_a_daily_pattern_has_its_period():
    # the biased estimate (divided by n) puts the peak a few points early: the check
    # looks half a window either side of it
    assert abs(detect_period(daily(3_000, 288), 64, 2048) - 288) <= 4
    # variables that do not move are left out; a second periodic one agrees
    values = np.column_stack([daily(3_000, 288), np.ones(3_000), daily(3_000, 288, seed=1)])
    assert abs(detect_period(values, 64, 2048) - 288) <= 4


def test_series_without_a_period_have_none():
    rng = np.random.default_rng(4)
    assert detect_period(rng.standard_normal((3_000, 3)), 64, 2048) == 0  # noise
    for seed in range(3):  # a random walk: high autocorrelation, falling with the lag
        walk = np.cumsum(np.random.default_rng(seed).standard_normal((5_000, 2)), axis=0)
        assert detect_period(walk, 64, 2048) == 0
    trend = np.arange(3_000.0)[:, None] + rng.standard_normal((3_000, 1))
    assert detect_period(trend, 64, 2048) == 0
    assert detect_period(np.ones((3_000, 2)), 64, 2048) == 0
    # a period is seen at least twice, and only up to the longest allowed
    assert detect_period(daily(500, 288), 64, 2048) == 0
    assert detect_period(daily(3_000, 288), 64, 200) == 0
    assert detect_period(daily(3_000, 288), 64, 0) == 0


def sample(seed: int = 0, n: int = 400) -> np.ndarray:
    ranking = np.random.default_rng(seed).normal(size=n)
    ranking[[60, 61]] = np.inf, np.nan
    ranking[230 % n] = 8.0
    return ranking


def test_the_reference_is_the_highest_score_around_the_same_phase_one_period_back():
    ranking = sample()
    reference, season = seasonal_reference(ranking, [], PERIOD, HALF)
    np.testing.assert_array_equal(reference, expected_seasonal(ranking, PERIOD, HALF))
    assert np.isnan(reference[:PERIOD]).all() and np.isfinite(reference[PERIOD:]).all()
    assert reference[230 + PERIOD] == 8.0  # a high score one period back covers its phase
    # the next chunk's past: the last period + half scores, NaN where unscored or infinite
    assert len(season) == PERIOD + HALF
    np.testing.assert_array_equal(season, np.where(np.isfinite(ranking), ranking, np.nan)[-56:])


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunks_give_the_reference_of_one_call(chunk):
    ranking = sample(1)
    whole, whole_season = seasonal_reference(ranking, [], PERIOD, HALF)
    parts, season = [], []
    for begin in range(0, len(ranking), chunk):
        reference, season = seasonal_reference(ranking[begin : begin + chunk], season, PERIOD, HALF)
        parts.append(reference)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(season, whole_season)


def new_state(period: int = PERIOD, half: int = HALF) -> StreamState:
    scores = np.random.default_rng(9).normal(size=2_000)
    return start_stream(scores, 1e-3, 0, 0, season=(period, half))


def test_a_feature_that_recurs_each_period_is_flagged_once_and_a_new_one_kept():
    day = np.random.default_rng(2).normal(0, 1, PERIOD)
    day[10:14] += 6.0  # a feature at the same phase every period
    ranking = np.tile(day, 10)
    ranking[5 * PERIOD + 30 : 5 * PERIOD + 34] += 6.0  # a rise at a phase of its own
    ranking[8 * PERIOD + 10 : 8 * PERIOD + 14] += 6.0  # the feature, far higher this time
    flags = ranking > 4.0  # and above the limit
    checked, season, *_ = seasonal_checked(flags, ranking, flags, new_state())
    assert checked[10:14].all()  # the first period has no past
    assert checked.sum() == 12  # the later periods' features are not flagged
    assert checked[5 * PERIOD + 30 : 5 * PERIOD + 34].all()
    assert checked[8 * PERIOD + 10 : 8 * PERIOD + 14].all()
    assert len(season) == PERIOD + HALF
    # no check in a state without a period, or without a ranking score
    plain = replace(new_state(), season_period=0, season_half=0)
    for same, kept, *_ in (
        seasonal_checked(flags, ranking, flags, plain),
        seasonal_checked(flags, None, flags, new_state()),
    ):
        np.testing.assert_array_equal(same, flags)
        assert kept == []


@pytest.mark.parametrize("chunk", [5, 1_000])
@pytest.mark.parametrize("higher_before", [False, True])
@pytest.mark.parametrize("saved_before", [False, True])
def test_a_run_takes_the_verdict_of_its_first_point(chunk, higher_before, saved_before):
    rng = np.random.default_rng(5)
    ranking = np.concatenate([rng.normal(0, 1, 2 * PERIOD), rng.normal(6, 1, 3 * PERIOD)])
    if higher_before:  # one period before the anomaly starts, a higher bump
        ranking[PERIOD - 4 : PERIOD + 4] = 20.0
    above = ranking > 3.0
    above[2 * PERIOD :] = True  # a long anomaly: one run above the limit, 3 periods long
    ranking[2 * PERIOD + 20] = -5.0  # a point of it as low as can be: it keeps the verdict
    flags = above.copy()
    flags[2 * PERIOD + 30] = False  # unconfirmed: unflagged, but the run goes on
    parts, state = [], new_state()
    for begin in range(0, len(ranking), chunk):
        part = slice(begin, begin + chunk)
        checked, season, kept, going = seasonal_checked(
            flags[part], ranking[part], above[part], state
        )
        parts.append(checked)
        state = replace(state, season=season, season_kept=kept, season_open=going)
        if saved_before:  # no season_open: the stream's points above the limit in a row
            run = len(above[: begin + chunk]) - np.flatnonzero(~above[: begin + chunk])[-1] - 1
            state = replace(state, season_open=None, run=int(run))
    checked = np.concatenate(parts)
    if higher_before:  # only its points that stand out for themselves: few in the later
        # periods, which are compared with the anomaly itself, and not the low point
        assert not checked[2 * PERIOD + 20] and checked[3 * PERIOD + 10 :].mean() < 0.2
    else:  # all of the run flagged, the low point too
        np.testing.assert_array_equal(checked[2 * PERIOD :], flags[2 * PERIOD :])
    expected = flags & expected_verdict(above, ranking, PERIOD, HALF)
    np.testing.assert_array_equal(checked, expected)


def test_the_state_keeps_the_seasons_scores_as_json():
    _, season = seasonal_reference(sample(3, n=100), [], PERIOD, HALF)  # NaN at 60, 61
    state = replace(new_state(), season=season)
    assert_kept_as_json(state, "season", season, PERIOD + HALF)
    data = state.to_dict()
    for name, value in (("season_period", -1), ("season_half", -1), ("season_period", HALF)):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**data, name: value, "season": []})


def test_the_longest_period_is_bounded_by_what_a_stream_keeps():
    assert_bounded("max_period", 2048, (-1, 8193, True), {"max_period": 8192})


def test_a_model_of_periodic_data_keeps_its_period_in_both_streams(detector, tmp_path):
    # the shared detector's training data repeat every 40 rows (tests/conftest.py)
    assert detector.metadata["period"] == 40
    for causal in (False, True):
        state = detector.stream_state(causal)
        assert (state.season_period, state.season_half) == (40, detector.window // 2)
    loaded = Detector.load(detector.save(tmp_path / "m.lvad"))
    assert loaded.stream_state(True).season_period == 40


def test_a_model_without_the_check_has_no_period(synthetic):
    config = TINY.replace(max_period=0, epochs=1)
    plain = Detector.fit(synthetic.train, config)
    assert plain.metadata["period"] == 0 and plain.stream_state().season_period == 0
