"""The flags' lone check: a flag with no other shortly before it needs a ranking score
beyond the validation's."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from model.alarm import lone_checked
from model.errors import ArtifactError
from model.stream import StreamState, advance, start_stream
from model.threshold import exceeds
from tests.model.test_held import decided
from tests.model.test_recent import expected_reference

LONE = 5.0  # the ranking score a flag with no other shortly before it must exceed
GAP = 8  # how far back such another may be


def expected_lone(
    flags: np.ndarray,
    ranking: np.ndarray,
    lone: float | None,
    gap: int = GAP,
    highest: np.ndarray | None = None,
) -> np.ndarray:
    """The check point by point, as specified: a flag is kept where another flag (before
    the check) is within ``gap`` points before it, or its ranking score is above
    ``lone`` and above ``highest`` (the recent past's highest, NaN: none)."""
    if lone is None:
        return flags
    if highest is None:
        highest = np.full(len(flags), np.nan)
    kept = flags.copy()
    for k in range(len(flags)):
        near = flags[max(0, k - gap) : k].any()
        beyond = bool(exceeds(ranking[k], lone)) and not highest[k] >= ranking[k]
        kept[k] = flags[k] and (near or beyond)
    return kept


def expected_stream_lone(
    flags: np.ndarray, ranking: np.ndarray, above: np.ndarray, state: StreamState
) -> np.ndarray:
    """``expected_lone`` with the state's level, gap and recent span (the series its own
    past)."""
    span, gap = state.recent_span, state.recent_gap
    highest = expected_reference(ranking, above, span, gap, 1.0) if span else None
    return expected_lone(flags, ranking, state.lone, state.lone_gap, highest)


def new_state(**options) -> StreamState:
    """A stream without the other checks, its limit near 7 nats."""
    validation = np.random.default_rng(2).exponential(size=5_000)
    return start_stream(validation, 1e-3, 0, 0, lone=LONE, lone_gap=GAP, **options)


MODERATE, BEYOND = 2.0, 9.0  # ranking scores below and above LONE
POINTS = (  # points above the limit and their ranking score
    ([50], MODERATE),  # lone
    ([100], BEYOND),  # lone, beyond the validation
    ([150, 151, 152], MODERATE),  # a run that starts moderately
    ([200, 201], BEYOND),  # a run beyond throughout
    ([240, 240 + GAP], MODERATE),  # two apart by the gap: one event
    ([270, 271 + GAP], MODERATE),  # one more apart: two
)


def sample() -> tuple[np.ndarray, np.ndarray]:
    alarm = np.random.default_rng(3).exponential(size=300) / 4
    ranking = np.ones(300)
    for points, level in POINTS:
        alarm[points], ranking[points] = 50.0, level
    return alarm, ranking


def test_a_lone_moderate_point_is_dropped_and_a_moderate_event_pages_from_its_second():
    alarm, ranking = sample()
    state = new_state()
    scored, after = decided(state, alarm, ranking)
    above = advance(state, alarm).above
    assert set(np.flatnonzero(above)) == {p for points, _ in POINTS for p in points}
    assert set(np.flatnonzero(scored.is_anomaly)) == {100, 151, 152, 200, 201, 240 + GAP}
    np.testing.assert_array_equal(scored.is_anomaly, expected_lone(above, ranking, LONE))
    assert (after.lone, after.lone_gap, after.passed_ago) == (LONE, GAP, None)
    # the points it drops keep their scores, limit and severity
    assert scored.alarm_score[50] > scored.limit[50] and scored.severity[50] > 0.999
    # without the check (a state saved before) every point above the limit is flagged
    np.testing.assert_array_equal(
        decided(replace(state, lone=None), alarm, ranking)[0].is_anomaly, above
    )
    # with a minimum run, runs decide, not the check
    two = decided(replace(state, min_run=2), alarm, ranking)[0]
    assert set(np.flatnonzero(two.is_anomaly)) == {151, 152, 201}


@pytest.mark.parametrize("split", [1, 50, 51, 150, 151, 153, 241, 240 + GAP, 299])
def test_chunks_give_the_flags_and_state_of_one_call(split):
    alarm, ranking = sample()
    state = new_state()
    whole, after = decided(state, alarm, ranking)
    first, middle = decided(state, alarm[:split], ranking[:split])
    ago = split - np.flatnonzero(advance(state, alarm[:split]).above)  # none: empty
    assert middle.passed_ago == (ago.min() if len(ago) and ago.min() <= GAP else None)
    second, end = decided(middle, alarm[split:], ranking[split:])
    joined = np.concatenate([first.is_anomaly, second.is_anomaly])
    np.testing.assert_array_equal(joined, whole.is_anomaly)
    assert end.to_dict() == after.to_dict()


def test_the_check_passes_flags_through_without_a_level_or_a_ranking_score():
    flags = np.array([True, False, False, True, True])
    ranking = np.zeros(5)
    state = replace(new_state(), lone_gap=2)
    for unchecked in (replace(state, lone=None), replace(state, min_run=3)):
        np.testing.assert_array_equal(lone_checked(flags, ranking, flags, unchecked)[0], flags)
    np.testing.assert_array_equal(lone_checked(flags, None, flags, state)[0], flags)
    # one that passed a point before the chunk reaches its first point, not its fourth
    kept, ago = lone_checked(flags, ranking, flags, replace(state, passed_ago=1))
    np.testing.assert_array_equal(kept, [True, False, False, False, True])
    assert ago == 1
    for part, ago, after in ((slice(0, 0), 2, 2), (slice(0, 2), 2, 2), (slice(1, 3), 1, None)):
        checked = lone_checked(
            flags[part], ranking[part], flags[part], replace(state, passed_ago=ago)
        )
        assert checked[1] == after


def test_a_lone_point_must_also_beat_the_recent_pasts_highest():
    """With the recent check, a lone flag's ranking score must also be above the highest
    of the recent check's span (points above the limit left out)."""
    state = new_state(recent=(40, 16))
    alarm = np.random.default_rng(4).exponential(size=300) / 4
    ranking = np.ones(300)
    ranking[60] = 12.0  # high, but not above the limit: in the recent past of 100
    alarm[[100, 200]], ranking[[100, 200]] = 50.0, BEYOND  # beyond the validation's
    scored, _ = decided(state, alarm, ranking)
    assert set(np.flatnonzero(scored.is_anomaly)) == {200}
    above = advance(state, alarm).above
    np.testing.assert_array_equal(
        scored.is_anomaly, expected_stream_lone(above, ranking, above, state)
    )
    # the recent check alone passes both (90 % of its span is below them)
    assert decided(replace(state, lone=None), alarm, ranking)[0].is_anomaly[[100, 200]].all()


def test_a_series_without_a_stream_is_checked_as_its_own_past(detector, synthetic):
    off = copy.copy(detector)  # the same model without the lone check
    off.streams = {k: replace(v, lone=None) for k, v in detector.streams.items()}
    for causal in (False, True):
        history = synthetic.train[-detector.context_points(causal) :]
        scored = detector.score(synthetic.test, causal=causal, context=history)
        plain = off.score(synthetic.test, causal=causal, context=history)
        state = detector.stream_state(causal)
        assert state.lone_gap == detector.window // 2  # the gap of the service's events
        above = exceeds(np.nan_to_num(plain.alarm_score, nan=-np.inf), plain.threshold)
        expected = expected_stream_lone(plain.is_anomaly, plain.score, above, state)
        np.testing.assert_array_equal(scored.is_anomaly, expected)
        assert scored.is_anomaly.sum() < plain.is_anomaly.sum()  # it drops some
        for start, end, _ in synthetic.injected.values():  # and no anomaly
            assert scored.is_anomaly[start:end].any()


def test_the_level_and_the_last_point_that_passed_are_kept_and_checked_in_the_state():
    state = replace(new_state(), passed_ago=3)
    data = json.loads(json.dumps(state.to_dict()))
    assert StreamState.from_dict(data) == state
    old = dict(data)
    del old["lone"], old["lone_gap"], old["passed_ago"]
    restored = StreamState.from_dict(old)
    assert restored.lone is None and restored.passed_ago is None  # saved before: no check
    for name, bad in (
        ("lone", float("nan")),
        ("lone", float("inf")),
        ("lone", "x"),
        ("lone", True),
        ("lone_gap", -1),
        ("passed_ago", 0),
        ("passed_ago", GAP + 1),
        ("passed_ago", 2.5),
        ("passed_ago", "3"),
        ("passed_ago", True),
    ):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**data, name: bad})
