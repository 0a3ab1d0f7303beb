"""A detector's streams: chunks scored in order with a state carried between them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from model import artifact
from model.alarm import fit_alarm
from model.detector import Detector
from model.errors import ArtifactError
from model.stream import StreamState
from model.threshold import exceeds
from tests.model.test_carry import expected_carry
from tests.model.test_held import expected_held
from tests.model.test_lone import expected_stream_lone
from tests.model.test_recent import expected_reference
from tests.model.test_season import expected_verdict


def stream(detector: Detector, values: np.ndarray, chunk: int, causal: bool, history=None):
    """``values`` in chunks, each with the points before it that one series would give
    it (``Detector.context_points``) as context."""
    state = detector.stream_state(causal)
    parts, context = [], history
    for begin in range(0, len(values), chunk):
        part = values[begin : begin + chunk]
        scored, state = detector.score_stream(part, state, context)
        parts.append(scored)
        context = np.concatenate([context, part])[-detector.context_points(causal) :]
    return parts, state


def test_a_stream_flags_the_injected_anomalies(detector, synthetic):
    parts, state = stream(detector, synthetic.test, 100, False, synthetic.train[-64:])
    flags = np.concatenate([p.is_anomaly for p in parts])
    for start, end, _ in synthetic.injected.values():
        assert flags[start:end].any(), f"rows {start}-{end} not flagged"
    assert flags[synthetic.labels == 0].mean() < 0.05
    assert state.seen == len(synthetic.test) and state != detector.stream_state()
    limits = np.concatenate([p.limit for p in parts])
    alarm = np.concatenate([p.alarm_score for p in parts])
    ranking = np.concatenate([p.score for p in parts])
    # no minimum run by default; the ranking score confirms each flag, and it stands
    # out from the stream's recent past (tests/model/test_recent.py), and its run's first
    # point from the same phase one period back (the training data repeat every 40
    # rows: test_season.py)
    # points below a limit the bound holds up count as above it (test_held.py)
    held = expected_held(detector.stream_state(), alarm, ranking)
    above = (alarm > limits) | held
    reference = expected_reference(ranking, above, state.recent_span, state.recent_gap)
    expected = ((alarm > limits) & exceeds(ranking, state.confirm) | held) & ~(reference >= ranking)
    expected &= expected_verdict(above, ranking, state.season_period, state.season_half)
    # and where no point within T/2 before it passed, its ranking score is beyond the
    # validation's and the recent past's (test_lone.py)
    expected = expected_stream_lone(expected, ranking, above, state)
    np.testing.assert_array_equal(flags, expected)
    assert flags.sum() < above.sum()
    severity = np.concatenate([p.severity for p in parts])
    assert severity[flags].min() >= np.quantile(severity[~flags], 0.99)


@pytest.mark.parametrize("chunk", [10, 37])
def test_causal_chunks_give_the_flags_of_one_call(detector, synthetic, chunk):
    history = synthetic.train[-detector.context_points(causal=True) :]
    whole, whole_state = stream(detector, synthetic.test, len(synthetic.test), True, history)
    parts, state = stream(detector, synthetic.test, chunk, True, history)
    for name in ("score", "alarm_score", "is_anomaly", "limit"):
        joined = np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_allclose(getattr(whole[0], name), joined, rtol=1e-9, err_msg=name)
    assert state.seen == whole_state.seen == len(synthetic.test)
    assert state.spot.n_scores == whole_state.spot.n_scores


def test_a_new_level_is_flagged_then_rebaselined_and_reported_as_drift(detector, synthetic):
    window = detector.config.regime_windows * detector.window
    shifted = np.concatenate([synthetic.test] * 4)
    shifted[300:, 3] += 100.0  # the fourth variable moves for good
    parts, state = stream(detector, shifted, 128, False, synthetic.train[-64:])
    flags = np.concatenate([p.is_anomaly for p in parts])
    run = np.argmin(flags[300:])  # flagged until a third of the window is (the spike at
    assert window // 6 <= run <= window // 3  # 200 was flagged too, inside the window)
    assert state.rebaselines >= 1 and state.drifting
    normal = np.tile(synthetic.labels, 4) == 0
    assert flags[300 + 2 * window :][normal[300 + 2 * window :]].mean() < 0.05


def test_the_stream_states_travel_with_the_model(detector, model_file):
    loaded = Detector.load(model_file)
    for causal in (False, True):
        assert loaded.stream_state(causal) == detector.stream_state(causal)
        assert loaded.stream_state(causal).causal is causal


def test_a_model_saved_before_streams_starts_from_its_threshold(detector, tmp_path):
    header = detector.header()
    del header["streams"]
    path = artifact.write_artifact(tmp_path / "old.lvad", detector.net.state_dict(), header)
    old = Detector.load(path)
    state = old.stream_state()
    assert state.spot.tail == detector.threshold and state.spot.depth == 0
    # the peaks are the fitted tail's quantiles, or the stored quantiles above t
    assert 0 < len(state.spot.peaks) <= min(detector.threshold.n_peaks, 1000)
    assert state.spot.limit == pytest.approx(detector.threshold.value)
    assert StreamState.from_dict(state.to_dict()) == state


def test_a_minimum_run_from_the_config_holds_the_first_points_of_each_run(detector, synthetic):
    normalized = detector.normalize(synthetic.train)
    config = detector.config.replace(min_run=3)
    _, streams, _ = fit_alarm(detector.engine, normalized, 400, config, detector.levels)
    assert {state.min_run for state in streams.values()} == {3}
    # a threshold refitted on a new regime follows its level over a quarter window
    assert {state.regime_depth for state in streams.values()} == {config.window // 4}
    # the recent and seasonal checks off (test_recent.py, test_season.py)
    checks_off = {"recent_span": 0, "season_period": 0, "season_half": 0}
    state = replace(detector.stream_state(), min_run=3, **checks_off)
    scored, _ = detector.score_stream(synthetic.test, state, synthetic.train[-64:])
    above = scored.alarm_score > scored.limit
    runs = np.convolve(above, np.ones(3, dtype=int))[: len(above)] >= 3
    np.testing.assert_array_equal(scored.is_anomaly, runs & exceeds(scored.score, state.confirm))
    assert 0 < scored.is_anomaly.sum() < above.sum()


def test_the_confirmation_level_is_a_quantile_of_the_validations_ranking(detector, synthetic):
    normalized = detector.normalize(synthetic.train)
    levels = {}
    for level in (0.9, 0.98, 0.0):
        config = detector.config.replace(confirm_level=level)
        _, streams, _ = fit_alarm(detector.engine, normalized, 400, config, detector.levels)
        levels[level] = streams
    # the validation's ranking scores: the last 400 points, as Detector.score ranks them
    values = synthetic.train
    for mode, causal in (("series", False), ("causal", True)):
        ranking = detector.score(values, causal=causal).score[-400:]
        expected = np.quantile(ranking[np.isfinite(ranking)], 0.98)
        assert levels[0.98][mode].confirm == pytest.approx(expected, rel=1e-6)
        assert levels[0.9][mode].confirm < levels[0.98][mode].confirm
        assert levels[0.0][mode].confirm is None  # no check: every point above the limit


def test_a_state_saved_before_the_confirmation_flags_every_point_above_the_limit(
    detector, synthetic
):
    data = detector.stream_state().to_dict()
    for name in ("confirm", "recent_span", "recent_gap", "recent", "season_period", "held"):
        del data[name]
    for name in ("season_half", "season", "lone", "lone_gap", "passed_ago", "carry"):
        del data[name]
    old = StreamState.from_dict(data)
    assert old.confirm is None and old.recent_span == 0 and old.season_period == 0
    scored, _ = detector.score_stream(synthetic.test, old, synthetic.train[-64:])
    np.testing.assert_array_equal(scored.is_anomaly, scored.alarm_score > scored.limit)
    for bad in (float("nan"), float("inf"), "x", True):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**data, "confirm": bad})


def test_a_noisier_stream_is_flagged_where_it_stands_out_from_its_recent_past(detector, synthetic):
    values = np.concatenate([synthetic.test, synthetic.test])
    values[:, 0] += 0.4 * np.random.default_rng(1).standard_normal(len(values))
    state = detector.stream_state()
    checked, after = detector.score_stream(values, state, synthetic.train[-64:])
    unchecked, _ = detector.score_stream(
        values, replace(state, recent_span=0), synthetic.train[-64:]
    )
    held = expected_held(state, checked.alarm_score, checked.score)
    above = (checked.alarm_score > checked.limit) | held
    reference = expected_reference(checked.score, above, state.recent_span, state.recent_gap)
    seasonal = expected_verdict(above, checked.score, state.season_period, state.season_half)
    confirmed = (checked.alarm_score > checked.limit) & exceeds(checked.score, state.confirm)
    expected = (confirmed | held) & ~(reference >= checked.score)
    expected = expected_stream_lone(expected & seasonal, checked.score, above, state)
    expected = expected_carry(expected, checked.score, above, reference, state.carry)
    np.testing.assert_array_equal(checked.is_anomaly, expected)
    assert checked.is_anomaly.sum() < unchecked.is_anomaly.sum()
    # the state carries the last span + gap ranking scores, points above the limit left out
    tail = slice(-state.recent_span - state.recent_gap, None)
    np.testing.assert_array_equal(after.recent, np.where(above, np.nan, checked.score)[tail])
    # ... and the last period + half of them for the seasonal check
    np.testing.assert_array_equal(after.season, checked.score[-state.season_period - 8 :])
