"""The carry: a flagged run goes on through a long anomaly while its ranking stays high."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from model.alarm import decide, fit_alarm
from model.carry import CARRY_HISTORY, CARRY_LEVEL, CARRY_RISE, Carry, carried
from model.config import ModelConfig
from model.errors import ArtifactError, DataError
from model.events import find_events
from model.scoring import SeriesScores
from model.stream import StreamState, start_stream
from model.threshold import LARGEST, fit_threshold
from tests.model.test_held import decided

SPAN, GAP, HISTORY = 6, 4, 5_000


def expected_carry(
    flags: np.ndarray,
    ranking: np.ndarray,
    above: np.ndarray,
    reference: np.ndarray | None,
    carry: Carry | None,
) -> np.ndarray:
    """The carry as specified, for a chunk after a carry that has seen nothing yet: a
    point that is not flagged is flagged where every point from the last flag up to it
    is within the span of a point above the limit or flagged, and its ranking score is
    above the alert's bar moved towards the alert's highest flag before it; the alert
    starts at the first of flags less than the gap apart, its bar the higher of the
    level (the quantile of the last ``history`` scores before it not above the limit,
    the carry's past first) and the recent check's reference there."""
    if carry is None:
        return flags
    past = np.asarray(carry.past, dtype=float)
    history = np.concatenate([past, np.where(above, np.nan, ranking)])
    out = flags.copy()
    for i in np.flatnonzero(~flags):
        last = np.flatnonzero(flags[:i])
        if not len(last):
            continue
        j = last[-1]
        start = j  # the alert's first flag
        while (earlier := np.flatnonzero(flags[:start])).size and start - earlier[-1] <= carry.gap:
            start = earlier[-1]
        window = history[max(0, len(past) + start - carry.history) : len(past) + start]
        window = window[~np.isnan(window)]
        if not len(window):
            continue  # no level: not carried
        bar = np.quantile(window, CARRY_LEVEL)
        if reference is not None and np.isnan(reference[start]):
            continue  # no recent past: not carried
        if reference is not None:
            bar = max(bar, reference[start])
        ok = True
        for k in range(j + 1, i + 1):
            marks = np.flatnonzero((flags | above)[:k])
            peak = ranking[start:k][flags[start:k]].max()
            ok &= k - marks[-1] <= carry.span
            ok &= ranking[k] > bar + CARRY_RISE * (peak - bar)
        out[i] = ok
    return out


def new_state(**options) -> StreamState:
    """A stream without the other checks, its limit near 7 nats; the validation's
    ranking scores, the carry's past, are ones."""
    validation = np.random.default_rng(2).exponential(size=5_000)
    carry = Carry.start(SPAN, GAP, HISTORY, np.ones(HISTORY))
    return start_stream(validation, 1e-3, 0, 0, carry=carry, **options)


N = 200
ABOVE = [10, 40, 43, 60]  # 10: a lone spike, 40-99: a long anomaly (ranking score 8)


def sample() -> tuple[np.ndarray, np.ndarray]:
    alarm = np.random.default_rng(3).exponential(size=N) / 4
    ranking = np.ones(N)
    ranking[10:30] = 10.0 - 0.5 * np.arange(20)  # 10 at the spike, falling after it
    ranking[40:100] = 8.0
    alarm[ABOVE] = 50.0
    return alarm, ranking


def test_a_long_anomaly_stays_flagged_past_its_points_above_the_limit():
    alarm, ranking = sample()
    state = new_state()
    scored, after = decided(state, alarm, ranking)
    flagged = set(np.flatnonzero(scored.is_anomaly))
    # each alert (40, 60; 43 is within the gap of 40) carried up to SPAN points past its
    # last point above the limit, while the ranking score stays above the bar (the
    # level, 1, moved a quarter of the way towards 8)
    assert flagged == {*range(10, 17), *range(40, 44 + SPAN), *range(60, 61 + SPAN)}
    above = alarm > scored.limit
    expected = expected_carry(above, ranking, above, None, state.carry)
    np.testing.assert_array_equal(scored.is_anomaly, expected)
    # what pages does not change: the same alerts as without the carry
    plain, _ = decided(replace(state, carry=None), alarm, ranking)
    assert set(np.flatnonzero(plain.is_anomaly)) == set(ABOVE)
    starts = [s for s, _ in find_events(scored.is_anomaly, GAP)]
    assert starts == [s for s, _ in find_events(plain.is_anomaly, GAP)]
    # carried points keep their alarm score, limit and severity
    assert scored.alarm_score[70] < scored.limit[70] and scored.severity[70] < 0.999
    assert after.carry.on is False and after.carry.since_last == SPAN + 1


def test_the_moved_bar_ends_a_spikes_carry_sooner():
    alarm, ranking = sample()
    carry = Carry.start(25, GAP, HISTORY, np.ones(HISTORY))  # a span past the decay
    flags = alarm > 7.0
    out, _ = carried(flags, ranking, flags, None, carry)
    # the spike: carried while its ranking score is above 1 + 0.25 x (10 - 1) = 3.25,
    # up to 23 (3.5), though it stays above the level (1) up to 27
    assert out[10:24].all() and not out[24:40].any()
    ranking[15:30] = 2.0
    out, _ = carried(flags, ranking, flags, None, carry)
    assert out[10:15].all() and not out[15:40].any()


def test_an_alert_without_a_recent_reference_is_not_carried():
    alarm, ranking = sample()
    flags = alarm > 7.0
    carry = Carry.start(SPAN, GAP, HISTORY, np.ones(HISTORY))
    reference = np.full(N, np.nan)
    out, after = carried(flags, ranking, flags, reference, carry)
    np.testing.assert_array_equal(out, flags)
    assert after.bar is None and after.peak is None
    # a reference above the level raises the bar: the plateau at 8 is not above 9
    reference[:] = 9.0
    out = carried(flags, ranking, flags, reference, carry)[0]
    np.testing.assert_array_equal(out[40:], flags[40:])
    reference[:] = 2.0
    out, _ = carried(flags, ranking, flags, reference, carry)
    np.testing.assert_array_equal(out, expected_carry(flags, ranking, flags, reference, carry))
    assert out[44]
    # a chunk that ends carrying, its bar the reference's (a numpy value): JSON all the same
    _, during = carried(flags[:45], ranking[:45], flags[:45], reference[:45], carry)
    assert during.on and during.bar == 2.0
    assert Carry.from_dict(json.loads(json.dumps(during.to_dict()))).to_dict() == during.to_dict()


def test_the_level_is_the_recent_quantile_of_scores_not_above_the_limit():
    ranking = np.concatenate([np.linspace(0, 9, 100), np.full(20, 5.0)])
    flags = np.zeros(120, dtype=bool)
    flags[[100, 101]] = True
    above = flags.copy()
    above[95:100] = True  # left out of the level: 9.0 and the four before
    carry = Carry.start(SPAN, GAP, HISTORY, np.zeros(0))
    out, after = carried(flags, ranking, above, None, carry)
    level = np.quantile(ranking[:95], CARRY_LEVEL)  # 8.5
    assert after.bar == pytest.approx(level) and not out[102:].any()  # 5 < 8.5
    out = carried(flags, np.where(np.arange(120) >= 100, 12.0, ranking), above, None, carry)[0]
    assert out[102 : 102 + SPAN].all() and not out[102 + SPAN :].any()


@pytest.mark.parametrize("recent", [(0, 0), (20, 4)])  # without and with a reference
@pytest.mark.parametrize("split", [1, 40, 41, 44, 47, 60, 61, 95, 141, 150, N - 1])
def test_chunks_give_the_flags_and_state_of_one_call(split, recent):
    alarm, ranking = sample()
    ranking = ranking + np.random.default_rng(5).uniform(0, 0.5, N)  # a recent past
    state = new_state(recent=recent)
    whole, after = decided(state, alarm, ranking)
    first, middle = decided(state, alarm[:split], ranking[:split])
    second, end = decided(middle, alarm[split:], ranking[split:])
    joined = np.concatenate([first.is_anomaly, second.is_anomaly])
    np.testing.assert_array_equal(joined, whole.is_anomaly)
    assert end.to_dict() == after.to_dict()
    assert len(middle.carry.past) == HISTORY


def test_the_carry_is_kept_in_the_state_and_checked():
    alarm, ranking = sample()
    _, state = decided(new_state(), alarm[:44], ranking[:44])  # carrying, mid-alert
    assert state.carry.on and state.carry.bar is not None
    data = json.loads(json.dumps(state.to_dict()))
    assert StreamState.from_dict(data).to_dict() == state.to_dict()
    old = {k: v for k, v in data.items() if k != "carry"}  # saved before: no carry
    assert StreamState.from_dict(old).carry is None
    assert StreamState.from_dict({**data, "carry": None}).carry is None
    stored = data["carry"]
    for name, bad in (
        ("span", 0),
        ("span", 2.0),
        ("gap", -1),
        ("history", 0),
        ("past", [1.0] * (HISTORY + 1)),
        ("past", [float("inf")]),
        ("past", ["1"]),
        ("bar", None),  # without the peak
        ("bar", float("nan")),
        ("bar", True),
        ("peak", float("inf")),
        ("since_flag", 0),
        ("since_flag", GAP + 2),
        ("since_last", SPAN + 2),
        ("on", 1),
        ("on", "yes"),
    ):
        with pytest.raises(ArtifactError, match="stream state carry"):
            StreamState.from_dict({**data, "carry": {**stored, name: bad}})
    for missing in ("span", "past", "on"):
        with pytest.raises(ArtifactError, match="stream state carry"):
            StreamState.from_dict(
                {**data, "carry": {k: v for k, v in stored.items() if k != missing}}
            )
    # not carrying, no alert: no bar
    idle = {**stored, "on": False, "bar": None, "peak": None}
    with pytest.raises(ArtifactError):
        StreamState.from_dict({**data, "carry": {**idle, "on": True}})
    assert StreamState.from_dict({**data, "carry": idle}).carry.bar is None


def test_a_model_carries_its_series_streams_only(detector, synthetic):
    config = detector.config
    series, causal = detector.stream_state(False), detector.stream_state(True)
    assert causal.carry is None
    assert series.carry.span == config.carry_windows * detector.window
    assert series.carry.gap == detector.window // 2
    assert series.carry.history == CARRY_HISTORY * detector.window
    assert 0 < len(series.carry.past) <= series.carry.history  # the validation's
    # a series stream flags at least what it flagged without, and pages the same (the
    # demo's long events are carried: tests/model/test_lone.py)
    history = synthetic.train[-detector.context_points() :]
    off = copy.copy(detector)
    off.streams = {k: replace(v, carry=None) for k, v in detector.streams.items()}
    on_flags, after = detector.score_stream(synthetic.test, series, history)
    # with the recent check's reference (numpy values), the state stays JSON
    assert (
        StreamState.from_dict(json.loads(json.dumps(after.to_dict()))).to_dict() == after.to_dict()
    )
    off_flags, _ = off.score_stream(synthetic.test, replace(series, carry=None), history)
    assert (on_flags.is_anomaly >= off_flags.is_anomaly).all()
    gap = detector.window // 2
    on_starts = [s for s, _ in find_events(on_flags.is_anomaly, gap)]
    off_starts = [s for s, _ in find_events(off_flags.is_anomaly, gap)]
    assert set(on_starts) <= set(off_starts)  # a carry may join two runs, never start one
    # and so does a series scored without a stream
    plain = off.score(synthetic.test, context=history).is_anomaly
    assert (detector.score(synthetic.test, context=history).is_anomaly >= plain).all()


def test_the_config_bounds_the_carry_and_zero_turns_it_off(detector, synthetic):
    assert ModelConfig().carry_windows == 1
    normalized = detector.normalize(synthetic.train)
    config = replace(detector.config, carry_windows=0)
    _, streams, _ = fit_alarm(detector.engine, normalized, 400, config, detector.levels)
    assert all(state.carry is None for state in streams.values())
    for bad in (-1, 17, True):
        with pytest.raises(DataError, match="carry_windows"):
            ModelConfig(carry_windows=bad)


def test_a_point_above_the_limit_but_not_flagged_extends_the_span():
    ranking = np.ones(N)
    ranking[40:100] = 8.0
    flags = np.zeros(N, dtype=bool)
    flags[40] = True
    carry = Carry.start(SPAN, GAP, HISTORY, np.ones(HISTORY))
    out = carried(flags, ranking, flags, None, carry)[0]
    assert out[40 : 41 + SPAN].all() and not out[41 + SPAN :].any()
    above = flags.copy()
    above[45] = True  # above the limit, dropped by a check: the span counts from it
    out = carried(flags, ranking, above, None, carry)[0]
    assert out[40 : 46 + SPAN].all() and not out[46 + SPAN :].any()
    np.testing.assert_array_equal(out, expected_carry(flags, ranking, above, None, carry))


def test_an_infinite_or_missing_ranking_score_keeps_the_state_readable():
    ranking = np.ones(N)
    ranking[40:100] = 8.0
    ranking[40] = np.inf  # beyond float32 at the alert's first flag
    flags = np.zeros(N, dtype=bool)
    flags[[40, 150]] = True
    validation = np.ones(HISTORY)
    validation[:3] = [np.inf, -np.inf, np.nan]
    carry = Carry.start(SPAN, GAP, HISTORY, validation)
    assert np.isnan(carry.past[:3]).all()
    out, after = carried(flags[:42], ranking[:42], flags[:42], None, carry)
    # kept as LARGEST: the bar moved towards it is beyond any finite score after it
    assert after.peak == LARGEST and out[40] and not out[41]
    stored = json.loads(json.dumps(after.to_dict(), allow_nan=False))
    assert Carry.from_dict(stored).to_dict() == after.to_dict()
    ranking[150] = np.nan  # a flag without a ranking score starts no carry
    out, after = carried(flags, ranking, flags, None, carry)
    assert not out[151:].any() and after.bar is None


def test_a_series_scored_without_a_stream_carries_as_a_new_streams_first_chunk():
    alarm, ranking = sample()
    state = new_state()
    validation = np.random.default_rng(2).exponential(size=5_000)
    threshold = fit_threshold(validation, risk=1e-3)
    raw = SeriesScores(-alarm[:, None], np.zeros(N), alarm, np.zeros(N, dtype=bool))
    scored = decide(raw, raw, threshold, np.zeros(1), ranking=ranking, checks=state)
    over = alarm > threshold.value
    assert set(np.flatnonzero(over)) == set(ABOVE)
    np.testing.assert_array_equal(
        scored.is_anomaly, expected_carry(over, ranking, over, None, state.carry)
    )
    assert scored.is_anomaly.sum() > over.sum()
    plain = decide(
        raw, raw, threshold, np.zeros(1), ranking=ranking, checks=replace(state, carry=None)
    )
    np.testing.assert_array_equal(plain.is_anomaly, over)
