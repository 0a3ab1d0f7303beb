"""The flags' lone check: a flag with too few others shortly before it needs a ranking
score beyond the validation's."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from model.alarm import lone_checked
from model.config import ModelConfig
from model.data import prepare_frame
from model.detector import Detector
from model.errors import ArtifactError, DataError
from model.evaluation.demo import DEMO_FEATURES, make_demo
from model.evaluation.evaluate import stream_in_chunks
from model.events import find_events
from model.stream import StreamState, advance, start_stream
from model.threshold import exceeds
from tests.model.test_held import decided
from tests.model.test_recent import expected_reference

LONE = 5.0  # the ranking score a flag with too few others shortly before it must exceed
GAP = 8  # how far back such others may be


def expected_lone(
    flags: np.ndarray,
    ranking: np.ndarray,
    lone: float | None,
    gap: int = GAP,
    highest: np.ndarray | None = None,
    others: int = 1,
) -> np.ndarray:
    """The check point by point, as specified: a flag is kept where ``others`` flags
    (before the check) are within ``gap`` points before it, or its ranking score is
    above ``lone`` and above ``highest`` (the recent past's highest, NaN: none)."""
    if lone is None:
        return flags
    if highest is None:
        highest = np.full(len(flags), np.nan)
    kept = flags.copy()
    for k in range(len(flags)):
        near = flags[max(0, k - gap) : k].sum() >= others
        beyond = bool(exceeds(ranking[k], lone)) and not highest[k] >= ranking[k]
        kept[k] = flags[k] and (near or beyond)
    return kept


def expected_stream_lone(
    flags: np.ndarray, ranking: np.ndarray, above: np.ndarray, state: StreamState
) -> np.ndarray:
    """``expected_lone`` with the state's level, gap, count and recent span (the series
    its own past)."""
    span, gap = state.recent_span, state.recent_gap
    highest = expected_reference(ranking, above, span, gap, 1.0) if span else None
    return expected_lone(flags, ranking, state.lone, state.lone_gap, highest, state.lone_others)


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
    ([300, 300 + GAP // 2, 300 + GAP], MODERATE),  # three within the gap
)
N = 330
KEPT = {  # by how many others a moderate flag needs within the gap before it
    1: {100, 151, 152, 200, 201, 240 + GAP, 300 + GAP // 2, 300 + GAP},
    2: {100, 152, 200, 201, 300 + GAP},
}


def sample() -> tuple[np.ndarray, np.ndarray]:
    alarm = np.random.default_rng(3).exponential(size=N) / 4
    ranking = np.ones(N)
    for points, level in POINTS:
        alarm[points], ranking[points] = 50.0, level
    return alarm, ranking


@pytest.mark.parametrize("others", [1, 2])
def test_a_lone_moderate_point_is_dropped_and_a_moderate_event_pages_after_others(others):
    alarm, ranking = sample()
    state = new_state(lone_others=others)
    scored, after = decided(state, alarm, ranking)
    above = advance(state, alarm).above
    assert set(np.flatnonzero(above)) == {p for points, _ in POINTS for p in points}
    assert set(np.flatnonzero(scored.is_anomaly)) == KEPT[others]
    expected = expected_lone(above, ranking, LONE, others=others)
    np.testing.assert_array_equal(scored.is_anomaly, expected)
    assert (after.lone, after.lone_gap, after.lone_others) == (LONE, GAP, others)
    assert after.passed_ago == []  # the last point above the limit is beyond the gap
    # the points it drops keep their scores, limit and severity
    assert scored.alarm_score[50] > scored.limit[50] and scored.severity[50] > 0.999
    # without the check (a state saved before) every point above the limit is flagged
    np.testing.assert_array_equal(
        decided(replace(state, lone=None), alarm, ranking)[0].is_anomaly, above
    )
    # with a minimum run, runs decide, not the check
    two = decided(replace(state, min_run=2), alarm, ranking)[0]
    assert set(np.flatnonzero(two.is_anomaly)) == {151, 152, 201}


@pytest.mark.parametrize("others", [1, 2])
@pytest.mark.parametrize("split", [1, 50, 51, 150, 151, 153, 241, 240 + GAP, 301, 305, N - 1])
def test_chunks_give_the_flags_and_state_of_one_call(split, others):
    alarm, ranking = sample()
    state = new_state(lone_others=others)
    whole, after = decided(state, alarm, ranking)
    first, middle = decided(state, alarm[:split], ranking[:split])
    ago = split - np.flatnonzero(advance(state, alarm[:split]).above)  # oldest first
    assert middle.passed_ago == ago[ago <= GAP][-others:].tolist()
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
    kept, ago = lone_checked(flags, ranking, flags, replace(state, passed_ago=[1]))
    np.testing.assert_array_equal(kept, [True, False, False, False, True])
    assert ago == [1]
    for part, ago, after in (
        (slice(0, 0), [2], [2]),
        (slice(0, 2), [2], [2]),
        (slice(1, 3), [1], []),
    ):
        checked = lone_checked(
            flags[part], ranking[part], flags[part], replace(state, passed_ago=ago)
        )
        assert checked[1] == after
    # asked for two others, the chunk before's two reach its first point
    two = replace(state, lone_others=2)
    kept, ago = lone_checked(flags, ranking, flags, replace(two, passed_ago=[2, 1]))
    np.testing.assert_array_equal(kept, [True, False, False, False, False])
    assert ago == [2, 1]


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
    detector = copy.copy(detector)  # without the carry, which comes after the check
    detector.streams = {k: replace(v, carry=None) for k, v in detector.streams.items()}
    off = copy.copy(detector)  # the same model without the lone check
    off.streams = {k: replace(v, lone=None) for k, v in detector.streams.items()}
    for causal in (False, True):
        history = synthetic.train[-detector.context_points(causal) :]
        scored = detector.score(synthetic.test, causal=causal, context=history)
        plain = off.score(synthetic.test, causal=causal, context=history)
        state = detector.stream_state(causal)
        assert state.lone_gap == detector.window // 2  # the gap of the service's events
        assert state.lone_others == detector.config.lone_others == 1
        above = exceeds(np.nan_to_num(plain.alarm_score, nan=-np.inf), plain.threshold)
        expected = expected_stream_lone(plain.is_anomaly, plain.score, above, state)
        np.testing.assert_array_equal(scored.is_anomaly, expected)
        assert scored.is_anomaly.sum() < plain.is_anomaly.sum()  # it drops some
        for start, end, _ in synthetic.injected.values():  # and no anomaly
            assert scored.is_anomaly[start:end].any()


def test_the_level_and_the_last_points_that_passed_are_kept_and_checked_in_the_state():
    state = replace(new_state(lone_others=2), passed_ago=[5, 3])
    data = json.loads(json.dumps(state.to_dict()))
    assert StreamState.from_dict(data) == state
    old = dict(data)
    del old["lone"], old["lone_gap"], old["passed_ago"], old["lone_others"]
    restored = StreamState.from_dict(old)
    assert restored.lone is None and restored.passed_ago == []  # saved before: no check
    assert restored.lone_others == 1
    # saved before the count: one position, or None
    one = {**data, "lone_others": 1}
    assert StreamState.from_dict({**one, "passed_ago": 3}).passed_ago == [3]
    assert StreamState.from_dict({**one, "passed_ago": None}).passed_ago == []
    for name, bad in (
        ("lone", float("nan")),
        ("lone", float("inf")),
        ("lone", "x"),
        ("lone", True),
        ("lone_gap", -1),
        ("lone_others", 0),
        ("lone_others", 1),  # fewer than the positions kept
        ("lone_others", 2.0),
        ("lone_others", "2"),
        ("passed_ago", 0),
        ("passed_ago", [0]),
        ("passed_ago", [GAP + 1]),
        ("passed_ago", [3, 5]),  # not oldest first
        ("passed_ago", [3, 3]),
        ("passed_ago", [5, 3, 1]),  # more than lone_others
        ("passed_ago", [2.5]),
        ("passed_ago", ["3"]),
        ("passed_ago", [True]),
        ("passed_ago", "3"),
    ):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**data, name: bad})


def test_the_config_bounds_the_count():
    assert ModelConfig().lone_others == 1
    for bad in (0, 65, True):
        with pytest.raises(DataError, match="lone_others"):
            ModelConfig(lone_others=bad)


def test_every_demo_event_pages_when_the_test_part_is_streamed():
    """The default model on the demo that ``make run`` serves: each of its five events,
    a latency spike of two points above the limit among them, gets an alert (flags
    merged across T/2, starting inside the event or within T before it) when the test
    part is streamed in chunks, as a monitoring pipeline sends it."""
    demo = make_demo(seed=0)
    detector = Detector.fit(prepare_frame(demo.train))
    rows = np.concatenate([demo.train[DEMO_FEATURES], demo.test[DEMO_FEATURES]]).astype(float)
    columns, _ = stream_in_chunks(detector, rows, len(demo.train), 200)
    alerts = [start for start, _ in find_events(columns["is_anomaly"], detector.window // 2)]
    for event in demo.events:
        reached = [a for a in alerts if event["start"] - detector.window <= a < event["end"]]
        assert reached, f"{event['kind']} at {event['start']}: no alert among {alerts}"
    # the carry (model/carry.py) flags more of the long events' rows, and pages the same
    off = copy.copy(detector)
    off.streams = {k: replace(v, carry=None) for k, v in detector.streams.items()}
    plain, _ = stream_in_chunks(off, rows, len(demo.train), 200)
    assert columns["is_anomaly"].sum() > plain["is_anomaly"].sum()
    assert alerts == [start for start, _ in find_events(plain["is_anomaly"], detector.window // 2)]
