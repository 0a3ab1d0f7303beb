"""The level floor of two-valued variables: fit, apply, artifact, and the detector's paths."""

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
from model.levels import LevelFloor
from model.threshold import exceeds
from tests.conftest import FEATURES, TINY


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
    # recent check, whose reference is each score's own)
    state = replace(detector.stream_state(), recent_span=0)
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
