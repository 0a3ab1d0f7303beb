"""The level floor of two-valued variables and the learned levels of one-valued ones: fit,
apply, artifact, stream state, and the detector's paths."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from model import artifact
from model.data import prepare_array
from model.detector import Detector
from model.errors import ArtifactError
from model.levels import MAX_TAKEN, LevelFloor, Taken
from model.stream import StreamState
from model.threshold import exceeds
from tests.conftest import FEATURES, TINY
from tests.model.test_detector_stream import stream


def test_fit_floors_only_variables_of_at_most_two_values():
    x = np.array(
        [
            # command (2 values, 2 changes), constant, continuous
            [0.0, 5.0, 0.1],
            [0.0, 5.0, 0.2],
            [1.0, 5.0, 0.3],
            [1.0, 5.0, 0.4],
            [0.0, 5.0, 0.5],
            [0.0, 5.0, 0.6],
            [0.0, 5.0, 0.7],
            [0.0, 5.0, 0.8],
        ]
    )
    floor = LevelFloor.fit(x)
    np.testing.assert_array_equal(floor.columns, [0, 1])
    np.testing.assert_array_equal(floor.levels, [[0.0, 1.0], [5.0, 5.0]])
    # log((changes + 1) / n): 2 changes in 8 points; a constant one never changed
    np.testing.assert_allclose(floor.floor, [np.log(3 / 8), np.log(1 / 8)])


def test_apply_floors_known_values_only_and_keeps_nan():
    floor = LevelFloor(np.array([0]), np.array([[0.0, 1.0]]), np.array([-3.0]))
    log_prob = np.array([[-50.0, -50.0], [-50.0, -50.0], [-1.0, -50.0], [np.nan, np.nan]])
    values = np.array([[1.0, 1.0], [7.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    out = floor.apply(log_prob, values)
    np.testing.assert_array_equal(out[:, 0], [-3.0, -50.0, -1.0, np.nan])  # known, new, above
    np.testing.assert_array_equal(out[:, 1], log_prob[:, 1])  # not a floored variable
    np.testing.assert_array_equal(log_prob[0], [-50.0, -50.0])  # the input is left alone
    # batches of windows (N, T, D) alike
    batched = floor.apply(log_prob.reshape(2, 2, 2), values.reshape(2, 2, 2))
    np.testing.assert_array_equal(batched.reshape(4, 2), out)


def test_a_value_within_float32_rounding_of_a_training_value_is_that_value():
    floor = LevelFloor(np.array([0]), np.array([[0.0, 20.0]]), np.array([-3.0]))
    values = np.array([[20.0 * (1 + 1e-7)], [1e-7], [20.01], [0.01]])
    out = floor.apply(np.full((4, 1), -50.0), values)
    np.testing.assert_array_equal(out[:, 0], [-3.0, -3.0, -50.0, -50.0])


# a variable held at 0 in training (floor -3) beside a two-valued one (0 and 1, floor -2)
HELD = LevelFloor(np.array([0, 1]), np.array([[0.0, 0.0], [0.0, 1.0]]), np.array([-3.0, -2.0]))


def test_a_one_valued_variable_is_floored_at_values_the_series_took_before():
    held = np.array([0, 5, 5, 0, 5, 7, 7, 5 + 1e-7, 9], dtype=float)
    values = np.column_stack([held, held])
    out = HELD.apply(np.full(values.shape, -50.0), values)
    # its training value, and a value from its second point at it on; the first keeps
    # the Gaussian's surprise
    expected = [-3.0, -50.0, -3.0, -3.0, -3.0, -50.0, -3.0, -3.0, -50.0]
    np.testing.assert_array_equal(out[:, 0], expected)
    # a two-valued variable learns nothing: values it never took in training stay new
    two = np.where(held == 0, -2.0, -50.0)
    np.testing.assert_array_equal(out[:, 1], two)
    # each series of a batch learns on its own
    batched = HELD.apply(np.full((2, 9, 2), -50.0), np.stack([values, values[::-1]]))
    np.testing.assert_array_equal(batched[0], out)
    np.testing.assert_array_equal(batched[1], HELD.apply(np.full((9, 2), -50.0), values[::-1]))


def test_a_variable_remembers_at_most_max_taken_values():
    new = np.arange(1.0, MAX_TAKEN + 3)  # MAX_TAKEN + 2 values, each taken twice
    values = np.column_stack([np.repeat(new, 2), np.zeros(2 * len(new))])
    out = HELD.apply(np.full(values.shape, -50.0), values)[:, 0]
    again = out[1::2]  # each value's second point
    np.testing.assert_array_equal(again, [-3.0] * MAX_TAKEN + [-50.0, -50.0])
    taken = HELD.learn(values, Taken())
    assert taken.values == {0: {float(v): 2 * i for i, v in enumerate(new[:MAX_TAKEN])}}
    assert taken.at == len(values)


@pytest.mark.parametrize("cut", [1, 4, 7])
@pytest.mark.parametrize("context", [0, 3])
def test_chunks_learn_what_one_series_learns(cut, context):
    held = np.array([0, 5, 5, 1, 2, 3, 4, 1, 6, 5, 7, 6], dtype=float)
    values = np.column_stack([held, np.zeros(len(held))])
    log_prob = np.full(values.shape, -50.0)
    whole = HELD.apply(log_prob, values)
    first = HELD.learn(values[:cut], Taken())
    # the second chunk with the points before it as context, their positions that far back
    begin = max(cut - context, 0)
    start = replace(first, at=first.at - (cut - begin))
    second = HELD.apply(log_prob[begin:], values[begin:], start)
    np.testing.assert_array_equal(second[cut - begin :], whole[cut:])
    assert HELD.learn(values[begin:], start) == HELD.learn(values, Taken())


def test_taken_values_round_trip_and_damaged_ones_are_refused():
    taken = HELD.learn(np.array([[5.0, 0.0], [7.5, 0.0], [7.5, 0.0]]), Taken(at=10))
    assert taken == Taken(13, {0: {5.0: 10, 7.5: 11}})
    assert Taken.from_dict(json.loads(json.dumps(taken.to_dict()))) == taken
    assert Taken.from_dict(None) == Taken()  # a state saved before learned levels
    good = taken.to_dict()
    damaged = [
        {**good, "at": 11},  # a value first taken at or after the next point
        {**good, "at": -1},
        {**good, "at": True},
        {**good, "at": 1.5},
        {**good, "values": {"0": [[float("nan"), 3]]}},
        {**good, "values": {"-1": [[5.0, 3]]}},
        {**good, "values": {"0": [[float(v), 3] for v in range(MAX_TAKEN + 1)]}},
        {**good, "values": {"0": [[5.0]]}},
        {**good, "values": {"0": [[5.0, 3.5]]}},  # a position that is not a count
        {**good, "values": {"x": [[5.0, 3]]}},
        {**good, "values": [[5.0, 3]]},
        {"values": {}},
    ]
    for data in damaged:
        with pytest.raises(ArtifactError, match="values taken"):
            Taken.from_dict(data)


def test_no_floor_returns_the_same_array():
    log_prob = np.zeros((3, 2))
    assert LevelFloor.none().apply(log_prob, np.ones((3, 2))) is log_prob


def test_round_trip_and_damaged_floors_are_refused():
    floor = LevelFloor(np.array([0, 2]), np.array([[0.0, 1.0], [2.0, 2.0]]), np.array([-3.0, -7.0]))
    again = LevelFloor.from_dict(json.loads(json.dumps(floor.to_dict())), n_features=3)
    for name in ("columns", "levels", "floor"):
        np.testing.assert_array_equal(getattr(again, name), getattr(floor, name))
    good = floor.to_dict()
    damaged = [
        {**good, "columns": [0, 3]},  # no such variable
        {**good, "columns": [2, 2]},  # twice
        {**good, "columns": [-1, 2]},
        {**good, "floor": [-3.0, 1.0]},  # a log-probability floor above 0
        {**good, "floor": [-3.0]},  # sizes differ
        {**good, "levels": [[0.0, float("nan")], [2.0, 2.0]]},
        {**good, "levels": [[0.0, 1.0, 2.0]]},  # not two per variable
        {**good, "floor": "x"},
        {"columns": [0]},
    ]
    for data in damaged:
        with pytest.raises(ArtifactError, match="level floor"):
            LevelFloor.from_dict(data, n_features=3)


@pytest.fixture(scope="module")
def commanded(synthetic):
    """The synthetic series with a command: 0, set to 1 for 20 points every 300."""
    command = np.zeros(len(synthetic.train))
    for start in range(100, len(command), 300):
        command[start : start + 20] = 1.0
    train = np.column_stack([synthetic.train, command])
    detector = Detector.fit(prepare_array(train, [*FEATURES, "command"]), TINY)
    return detector, train


def _switched(train, value):
    """A test part with the command set to ``value`` for 5 points at an unusual time."""
    test = np.column_stack([np.asarray(train[-200:, :4]), np.zeros(200)])
    test[100:105, 4] = value
    return test


def test_a_command_at_a_known_value_costs_at_most_its_rate_of_change(commanded):
    detector, train = commanded
    changes = np.count_nonzero(np.diff(train[:, 4]))
    np.testing.assert_array_equal(detector.levels.columns, [4])
    assert detector.levels.floor[0] == pytest.approx(np.log((changes + 1) / len(train)))
    bound = -detector.levels.floor[0]
    floored, plain = copy.copy(detector), copy.copy(detector)
    floored.config = plain.config = detector.config.replace(smooth_window=1)  # per step
    plain.levels = LevelFloor.none()  # the Gaussian alone
    # the lone check off: it looks at the point before (test_lone.py)
    floored.streams = plain.streams = {
        k: replace(v, lone=None) for k, v in detector.streams.items()
    }
    for causal in (False, True):
        for value in (1.0, 3.0):  # a value the command took in training, and a new one
            test = _switched(train, value)
            now, gaussian = (
                d.score(test, causal=causal, context=train[-64:]) for d in (floored, plain)
            )
            # the log-probability and the alarm are the Gaussian's; so are the flags where
            # the ranking score confirms them
            np.testing.assert_array_equal(now.log_prob, gaussian.log_prob)
            np.testing.assert_array_equal(now.alarm_score, gaussian.alarm_score)
            confirm = detector.stream_state(causal).confirm
            expected = gaussian.is_anomaly & exceeds(now.score, confirm)
            np.testing.assert_array_equal(now.is_anomaly, expected)
            assert gaussian.is_anomaly[100:105].any()
            # the ranking score counts the command at most ``bound`` at a known value
            nll = -gaussian.log_prob[:, 4]
            cut = nll - np.minimum(nll, bound) if value == 1.0 else 0.0
            np.testing.assert_allclose(now.score, gaussian.score - cut, rtol=1e-12)
            if value == 1.0:
                assert np.nanmax(nll[100:105]) > bound  # the switch costs more by the Gaussian
            else:  # a value the command never took keeps the model's full surprise
                assert np.nanmin(nll[100:105]) > bound


def test_every_scoring_path_applies_the_floor(commanded, tmp_path):
    detector, train = commanded
    test = _switched(train, 1.0)
    # the same model saved and loaded scores the same; one saved before the floor
    # existed loads without it and ranks the command by the Gaussian alone
    path = detector.save(tmp_path / "commanded.lvad")
    np.testing.assert_array_equal(Detector.load(path).score(test).score, detector.score(test).score)
    tensors, header = artifact.read_artifact(path)
    del header["levels"]
    old = Detector.load(artifact.write_artifact(tmp_path / "old.lvad", tensors, header))
    assert len(old.levels.columns) == 0
    before, now = old.score(test), detector.score(test)
    assert (now.score <= before.score + 1e-9).all() and now.score.max() < before.score.max()
    np.testing.assert_array_equal(before.alarm_score, now.alarm_score)
    # windows of T points: the one where the Gaussian charges the switch most
    t = detector.window
    windows = np.stack([test[start : start + t] for start in range(100 - t, 110)])
    plain = old.score_windows(windows)
    nll = -plain.log_prob[:, :, 4]  # smoothed over the window, as the ranking score
    worst = int(np.argmax(nll.max(axis=1)))
    assert nll[worst].max() > -detector.levels.floor[0]
    single, plain = (
        detector.score_windows(windows[worst : worst + 1]),
        plain.pick(slice(worst, worst + 1)),
    )
    assert (single.score <= plain.score + 1e-9).all() and single.score.max() < plain.score.max()
    np.testing.assert_array_equal(single.alarm_score, plain.alarm_score)
    # a stream's chunk: ranked as the series; the limit and the state as before, the
    # flags those the floored ranking score confirms (not the switch; without the
    # recent check, whose reference is each score's own, and the carry, which follows
    # the ranking score past the limit)
    state = replace(detector.stream_state(), recent_span=0, carry=None)
    (streamed, after), (unfloored, unfloored_after) = (
        d.score_stream(test, state, train[-64:]) for d in (detector, old)
    )
    series = detector.score(test, context=train[-64:])
    np.testing.assert_array_equal(streamed.score, series.score)
    np.testing.assert_array_equal(streamed.limit, unfloored.limit)
    expected = unfloored.is_anomaly & exceeds(streamed.score, state.confirm)
    np.testing.assert_array_equal(streamed.is_anomaly, expected)
    assert unfloored.is_anomaly[100:105].any() and not streamed.is_anomaly[100:105].any()
    assert after == unfloored_after


def test_a_damaged_floor_in_a_model_file_is_refused(commanded, tmp_path):
    detector, _ = commanded
    header = detector.header()
    header["levels"]["columns"] = [9]
    path = artifact.write_artifact(tmp_path / "bad.lvad", detector.net.state_dict(), header)
    with pytest.raises(ArtifactError, match="level floor"):
        Detector.load(path)


@pytest.fixture(scope="module")
def held_still(synthetic):
    """The synthetic series with a status held at 2.0 all through training."""
    train = np.column_stack([synthetic.train, np.full(len(synthetic.train), 2.0)])
    detector = Detector.fit(prepare_array(train, [*FEATURES, "status"]), TINY)
    return detector, train


def _status(train):
    """A test part whose status moves to 5.0 at 100 for good, then to 9.0 at 150."""
    test = np.column_stack([np.asarray(train[-200:, :4]), np.full(200, 2.0)])
    test[100:, 4] = 5.0
    test[150:, 4] = 9.0
    return test


def test_a_status_at_a_value_taken_before_costs_at_most_its_rate_of_change(held_still):
    detector, train = held_still
    assert detector.levels.levels.tolist() == [[0.0, 0.0]]  # the status, normalized
    bound = -detector.levels.floor[0]
    floored, plain = copy.copy(detector), copy.copy(detector)
    floored.config = plain.config = detector.config.replace(smooth_window=1)  # per step
    plain.levels = LevelFloor.none()
    test = _status(train)
    for causal in (False, True):
        now, gaussian = (
            d.score(test, causal=causal, context=train[-64:]) for d in (floored, plain)
        )
        nll = -gaussian.log_prob[:, 4]
        # the first point at each new value keeps the Gaussian's surprise: the change
        first = [100, 150]
        np.testing.assert_allclose(now.score[first], gaussian.score[first], rtol=1e-12)
        assert nll[first].min() > bound
        # every other point costs the status at most ``bound``
        cut = nll - np.minimum(nll, bound)
        cut[first] = 0.0
        np.testing.assert_allclose(now.score, gaussian.score - cut, rtol=1e-12, atol=1e-9)
        assert cut[101:150].min() > 0 and cut[151:].min() > 0
        np.testing.assert_array_equal(now.alarm_score, gaussian.alarm_score)


@pytest.mark.parametrize("causal", [False, True])
def test_a_stream_learns_across_its_chunks_as_one_series(held_still, causal):
    detector, train = held_still
    test = _status(train)
    history = train[-detector.context_points(causal) :]
    parts, state = stream(detector, test, 37, causal, history)
    # each chunk ranked as the end of one series of every point so far
    for begin, part in zip(range(0, len(test), 37), parts, strict=True):
        end = begin + len(part.score)
        whole = detector.score(test[:end], causal=causal, context=history)
        np.testing.assert_allclose(part.score, whole.score[begin:], rtol=1e-9)
    # the status moved 3.0 and 7.0 from its training value (normalized: less 2.0, scale 1)
    assert state.taken == Taken(len(test), {4: {3.0: 100, 7.0: 150}})
    assert StreamState.from_dict(json.loads(json.dumps(state.to_dict()))).taken == state.taken
    # a state saved before learned levels starts learning with its next chunk, from the
    # chunk's context on
    saved = state.to_dict()
    del saved["taken"]
    old = StreamState.from_dict(saved)
    assert old.taken == Taken()
    _, after = detector.score_stream(test[150:], old, test[150 - len(history) : 150])
    assert after.taken == Taken(50, {4: {3.0: -len(history), 7.0: 0}})


def test_a_status_that_keeps_taking_new_values_keeps_the_state_small(held_still):
    detector, train = held_still
    test = _status(train)
    test[:, 4] = np.random.default_rng(0).normal(size=len(test)) * 100  # new at every point
    state, sizes, context = detector.stream_state(), [], train[-detector.context_points() :]
    for _ in range(5):  # the same 200 points again and again, each after the last
        _, state = detector.score_stream(test, state, context)
        sizes.append(len(json.dumps(state.to_dict()["taken"])))
        context = test[-len(context) :]
    # the first MAX_TAKEN values are remembered, and no more; the state does not grow
    assert [len(v) for v in state.taken.values.values()] == [MAX_TAKEN]
    assert sorted(state.taken.values[4].values()) == list(range(MAX_TAKEN))
    assert max(sizes) < 200
