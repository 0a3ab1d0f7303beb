"""The flags' lone check: a flag after an unflagged point needs a ranking score beyond
the validation's."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from model.alarm import decide_stream, lone_checked
from model.errors import ArtifactError
from model.scoring import SeriesScores
from model.stream import StreamState, advance, start_stream
from model.threshold import exceeds

LONE = 5.0  # the ranking score a flag after an unflagged point must exceed


def expected_lone(flags: np.ndarray, ranking: np.ndarray, lone: float | None) -> np.ndarray:
    """The check point by point, as specified: a flag is kept where the point before it
    was flagged before the check, or its ranking score is above ``lone``."""
    if lone is None:
        return flags
    kept = flags.copy()
    for k in range(len(flags)):
        before = k > 0 and flags[k - 1]
        kept[k] = flags[k] and (before or bool(exceeds(ranking[k], lone)))
    return kept


def new_state(**options) -> StreamState:
    """A stream without the other checks, its limit near 7 nats."""
    validation = np.random.default_rng(2).exponential(size=5_000)
    return start_stream(validation, 1e-3, 0, 0, lone=LONE, **options)


def decided(state: StreamState, alarm: np.ndarray, ranking: np.ndarray | None):
    """``alarm`` (n,) decided by ``state`` as a one-variable model's scores would be."""
    raw = SeriesScores(-alarm[:, None], np.zeros(len(alarm)), alarm, np.zeros(len(alarm), bool))
    return decide_stream(raw, raw, state, np.zeros(1), ranking=ranking)


def sample() -> tuple[np.ndarray, np.ndarray]:
    """Quiet alarm scores with points above the limit: a lone moderate one (50), a lone
    one beyond the validation (100), a run of three that starts moderately (150-152),
    and a run whose ranking score is beyond throughout (200-201)."""
    alarm = np.random.default_rng(3).exponential(size=300) / 4
    ranking = np.ones(300)
    for points, level in (([50], 2.0), ([100], 9.0), ([150, 151, 152], 2.0), ([200, 201], 9.0)):
        alarm[points], ranking[points] = 50.0, level
    return alarm, ranking


def test_a_lone_moderate_point_is_dropped_and_a_moderate_run_pages_from_its_second():
    alarm, ranking = sample()
    state = new_state()
    scored, after = decided(state, alarm, ranking)
    assert set(np.flatnonzero(advance(state, alarm).above)) == {50, 100, 150, 151, 152, 200, 201}
    assert set(np.flatnonzero(scored.is_anomaly)) == {100, 151, 152, 200, 201}
    np.testing.assert_array_equal(
        scored.is_anomaly, expected_lone(advance(state, alarm).above, ranking, LONE)
    )
    assert after.lone == LONE and after.passed is False
    # the points it drops keep their scores, limit and severity
    assert scored.alarm_score[50] > scored.limit[50] and scored.severity[50] > 0.999
    # without the check (a state saved before, or a minimum run) every point is flagged
    for unchecked in (replace(state, lone=None), replace(state, lone=None, min_run=1)):
        assert decided(unchecked, alarm, ranking)[0].is_anomaly[[50, 150]].all()
    two = decided(replace(state, min_run=2), alarm, ranking)[0]
    assert set(np.flatnonzero(two.is_anomaly)) == {151, 152, 201}  # runs, not the check


@pytest.mark.parametrize("split", [1, 50, 51, 150, 151, 152, 299])
def test_chunks_give_the_flags_and_state_of_one_call(split):
    alarm, ranking = sample()
    state = new_state()
    whole, after = decided(state, alarm, ranking)
    first, middle = decided(state, alarm[:split], ranking[:split])
    assert middle.passed is bool(advance(state, alarm[:split]).above[-1])
    second, end = decided(middle, alarm[split:], ranking[split:])
    np.testing.assert_array_equal(
        np.concatenate([first.is_anomaly, second.is_anomaly]), whole.is_anomaly
    )
    assert end.to_dict() == after.to_dict()


def test_the_check_passes_flags_through_without_a_level_or_a_ranking_score():
    flags = np.array([True, False, True, True])
    ranking = np.zeros(4)
    state = new_state()
    for unchecked in (replace(state, lone=None), replace(state, min_run=3)):
        np.testing.assert_array_equal(lone_checked(flags, ranking, unchecked)[0], flags)
    np.testing.assert_array_equal(lone_checked(flags, None, state)[0], flags)
    kept, passed = lone_checked(flags, ranking, replace(state, passed=True))
    np.testing.assert_array_equal(kept, [True, False, False, True])
    assert passed is True
    assert lone_checked(flags[:0], ranking[:0], replace(state, passed=True))[1] is True


def test_a_series_without_a_stream_is_checked_as_its_own_past(detector, synthetic):
    off = copy.copy(detector)  # the same model without the lone check
    off.streams = {k: replace(v, lone=None) for k, v in detector.streams.items()}
    for causal in (False, True):
        history = synthetic.train[-detector.context_points(causal) :]
        scored = detector.score(synthetic.test, causal=causal, context=history)
        plain = off.score(synthetic.test, causal=causal, context=history)
        lone = detector.stream_state(causal).lone
        expected = expected_lone(plain.is_anomaly, plain.score, lone)
        np.testing.assert_array_equal(scored.is_anomaly, expected)
        assert scored.is_anomaly.sum() < plain.is_anomaly.sum()  # it drops some
        for start, end, _ in synthetic.injected.values():  # and no anomaly
            assert scored.is_anomaly[start:end].any()


def test_the_level_and_the_last_verdict_are_kept_and_checked_in_the_state():
    state = replace(new_state(), passed=True)
    data = json.loads(json.dumps(state.to_dict()))
    assert StreamState.from_dict(data) == state
    old = dict(data)
    del old["lone"], old["passed"]
    restored = StreamState.from_dict(old)
    assert restored.lone is None and restored.passed is False  # saved before: no check
    for name, bad in (
        ("lone", float("nan")),
        ("lone", float("inf")),
        ("lone", "x"),
        ("lone", True),
        ("passed", 1),
        ("passed", "false"),
        ("passed", None),
    ):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**data, name: bad})
