"""Points below a stream's limit where the bound on its tail holds the limit up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model.alarm import decide_stream, fit_alarm
from model.config import ModelConfig
from model.errors import ArtifactError, DataError
from model.scoring import SeriesScores
from model.stream import DRIFTING, StreamState, advance, start_stream
from model.threshold import exceeds

HELD = 5.0  # the ranking score a held point must exceed


def held_state(window: int = 0) -> StreamState:
    """A stream whose limit the bound holds 2 nats above its tail's 1 - risk quantile."""
    validation = np.random.default_rng(4).exponential(size=5_000)
    state = start_stream(validation, 1e-3, 0, window, held=HELD)
    assert state.spot.tail.method == "pot"  # a GPD tail: severity beyond the quantile
    tail = replace(state.spot.tail, value=state.spot.tail.value + 2.0)
    return replace(state, spot=replace(state.spot, tail=tail, z_min=tail.value))


def decided(state: StreamState, alarm: np.ndarray, ranking: np.ndarray | None):
    """``alarm`` (n,) decided by ``state`` as a one-variable model's scores would be."""
    raw = SeriesScores(-alarm[:, None], np.zeros(len(alarm)), alarm, np.zeros(len(alarm), bool))
    return decide_stream(raw, raw, state, np.zeros(1), ranking=ranking)


def expected_held(state: StreamState, alarm: np.ndarray, ranking: np.ndarray) -> np.ndarray:
    """The held points as specified: below the limit, the tail's exceedance probability
    below the risk, the drift statistic at most one half, the ranking score above
    ``state.held``."""
    result = advance(state, alarm)
    beyond = result.exceedance < state.spot.tail.risk
    calm = ~(result.drift > DRIFTING)
    return beyond & ~result.above & calm & exceeds(ranking, state.held)


def sample() -> tuple[np.ndarray, np.ndarray, StreamState]:
    """Quiet scores with, at rows 100-104, points between the tail's quantile and the
    held limit, a high ranking score at 100-102; at 200 one above the limit."""
    state = held_state()
    quantile = state.spot.tail.value - 2.0
    alarm = np.random.default_rng(5).exponential(size=300)
    alarm[100:105], alarm[200] = quantile + 1.0, quantile + 3.0
    ranking = np.zeros(300)
    ranking[100:103], ranking[200] = HELD + 1.0, HELD + 1.0
    return alarm, ranking, state


def test_a_point_below_a_held_limit_is_flagged_where_the_ranking_score_is_beyond_the_validation():
    alarm, ranking, state = sample()
    scored, after = decided(state, alarm, ranking)
    assert np.all(alarm[100:105] < scored.limit[100:105])  # below the limit ...
    assert np.all(scored.severity[100:105] > 1 - state.spot.tail.risk)  # ... beyond the tail
    assert set(np.flatnonzero(scored.is_anomaly)) == {100, 101, 102, 200}
    held = expected_held(state, alarm, ranking)
    np.testing.assert_array_equal(scored.is_anomaly[:200], held[:200])
    # a state saved before (no level), or one that needs runs, has no such flags
    for old in (replace(state, held=None), replace(state, min_run=2)):
        assert not decided(old, alarm, ranking)[0].is_anomaly[100:105].any()
    assert after.held == HELD


def test_no_point_below_the_limit_is_flagged_while_the_stream_drifts():
    alarm, ranking, _ = sample()
    state = held_state(window=50)
    drifted = replace(state, scores=[state.drift_level + 1.0] * 50)  # all above the level
    calm = replace(state, scores=[0.0] * 50)
    assert drifted.drifting and not calm.drifting
    part = slice(100, 105)  # the points between the quantile and the limit
    scored, _ = decided(drifted, alarm[part], ranking[part])
    assert not scored.is_anomaly.any()
    np.testing.assert_array_equal(expected_held(drifted, alarm[part], ranking[part]), False)
    np.testing.assert_array_equal(
        decided(calm, alarm[part], ranking[part])[0].is_anomaly, [1, 1, 1, 0, 0]
    )


def test_held_points_are_left_out_of_the_recent_reference():
    alarm, ranking, state = sample()
    state = replace(state, recent_span=40, recent_gap=16)
    scored, after = decided(state, alarm[:105], ranking[:105])
    assert scored.is_anomaly[100:103].all()  # they stand out from their past
    # the state's recent scores leave them out, as points above the limit are
    assert np.isnan(after.recent[-5:-2]).all() and not np.isnan(after.recent[-2:]).any()


def test_held_points_pass_the_seasonal_check_and_chunks_give_one_calls_flags():
    state = replace(held_state(), season_period=40, season_half=8)
    quantile = state.spot.tail.value - 2.0
    alarm = np.random.default_rng(6).exponential(size=300)
    alarm[149], alarm[150], alarm[200] = quantile + 1.0, quantile + 3.0, quantile + 1.0
    ranking = np.zeros(300)
    ranking[[149, 150, 200]] = HELD + 1.0
    ranking[[118, 160]] = 50.0  # one period before 150 (not 149), and before 200
    whole, after = decided(state, alarm, ranking)
    # 150, above the limit, takes the verdict of its run's first point, the held 149;
    # the held 200 does not stand out from the same phase one period back
    assert set(np.flatnonzero(whole.is_anomaly)) == {149, 150}
    for split in (37, 149, 150, 151):
        first, middle = decided(state, alarm[:split], ranking[:split])
        second, end = decided(middle, alarm[split:], ranking[split:])
        flags = np.concatenate([first.is_anomaly, second.is_anomaly])
        np.testing.assert_array_equal(flags, whole.is_anomaly)
        assert end.to_dict() == after.to_dict()


@pytest.mark.parametrize("name", ["held", "lone"])  # the lone check's: test_lone.py
def test_the_level_is_the_validations_highest_ranking_score(detector, synthetic, name):
    normalized = detector.normalize(synthetic.train)
    for level, check in ((1.0, np.max), (0.99, lambda r: np.quantile(r, 0.99))):
        config = detector.config.replace(**{f"{name}_level": level})
        _, streams, _ = fit_alarm(detector.engine, normalized, 400, config, detector.levels)
        for mode, causal in (("series", False), ("causal", True)):
            ranking = detector.score(synthetic.train, causal=causal).score[-400:]
            expected = check(ranking[np.isfinite(ranking)])
            assert getattr(streams[mode], name) == pytest.approx(expected, rel=1e-6)
    config = detector.config.replace(**{f"{name}_level": 0.0})
    _, streams, _ = fit_alarm(detector.engine, normalized, 400, config, detector.levels)
    assert {getattr(state, name) for state in streams.values()} == {None}  # never
    assert getattr(detector.stream_state(), name) is not None


def test_the_level_is_kept_and_checked_in_the_state():
    state = held_state()
    assert StreamState.from_dict(state.to_dict()).held == HELD
    old = state.to_dict()
    del old["held"]
    assert StreamState.from_dict(old).held is None
    for bad in (float("nan"), float("inf"), "x", True):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**state.to_dict(), "held": bad})


@pytest.mark.parametrize("name", ["held_level", "lone_level"])
def test_the_config_bounds_the_level(name):
    assert getattr(ModelConfig(), name) == 1.0
    ModelConfig(**{name: 0.0})
    for bad in (-0.1, 1.5, True):
        with pytest.raises(DataError, match=name):
            ModelConfig(**{name: bad})


def test_without_a_ranking_score_every_point_above_the_limit_is_flagged():
    alarm, _, state = sample()
    scored, _ = decided(state, alarm, None)
    np.testing.assert_array_equal(scored.is_anomaly, advance(state, alarm).above)
