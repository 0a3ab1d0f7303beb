"""Query results aligned into groups: missing points, missing variables, ambiguous
series, too many groups, and the training data assembled from them."""

from __future__ import annotations

import numpy as np

from app.pull.frames import align, describe, fill_gaps, grid, training_data
from app.pull.reader import Series
from model.data import prepare_array

TIMES = grid(1000.0, 1009.0, 1.0)  # 10 points


def series(labels: dict, values, times=TIMES) -> Series:
    return Series(labels, np.asarray(times, dtype=float), np.asarray(values, dtype=float))


def test_groups_are_aligned_on_the_grid_with_nan_where_points_are_missing():
    results = {
        "load": [series({"host": "a", "job": "x"}, np.arange(10)),
                 series({"host": "b", "job": "x"}, np.arange(10) + 100)],
        "latency": [series({"host": "b"}, [7.0] * 8, TIMES[2:]),  # starts two steps late
                    series({"host": "a"}, [1.0] * 10)],
    }  # fmt: skip
    alignment = align(results, ["host"], TIMES, max_groups=10)
    assert alignment.skipped == {} and alignment.problems == []
    b = alignment.frames[("b",)]
    assert b.labels == {"host": "b"}
    np.testing.assert_array_equal(b.values[:, 0], np.arange(10) + 100)
    assert np.isnan(b.values[:2, 1]).all() and (b.values[2:, 1] == 7.0).all()
    assert describe(["host"], ("b",)) == '{host="b"}'


def test_points_off_the_grid_are_ignored_and_the_tail_trimmed():
    times = np.concatenate([[990.0], TIMES[:8]])  # one before the grid; none at the last two
    alignment = align({"x": [series({}, np.arange(9), times)]}, [], TIMES, 10)
    frame = alignment.frames[()]
    assert np.isnan(frame.values[-2:, 0]).all() and frame.values[0, 0] == 1.0
    trimmed = frame.current()
    assert len(trimmed.times) == 8 and trimmed.times[-1] == TIMES[7]
    late = np.full((10, 2), np.nan)
    late[3:, 0], late[5:, 1] = 1.0, 2.0  # appeared at the fourth step, one variable later
    appeared = align({"x": [series({}, late[:, 0])], "y": [series({}, late[:, 1])]}, [], TIMES, 10)
    current = appeared.frames[()].current()
    np.testing.assert_array_equal(current.times, TIMES[3:])
    assert np.isnan(current.values[:2, 1]).all()


def test_a_group_missing_a_variable_is_skipped():
    results = {"load": [series({"host": "a"}, np.ones(10)), series({"host": "b"}, np.ones(10))],
               "latency": [series({"host": "a"}, np.ones(10))]}  # fmt: skip
    alignment = align(results, ["host"], TIMES, 10)
    assert list(alignment.frames) == [("a",)]
    assert alignment.skipped == {("b",): "missing_variable"}


def test_several_series_in_one_group_are_refused_not_mixed():
    cpu = [series({"instance": "n1", "cpu": "0"}, np.ones(10)),
           series({"instance": "n1", "cpu": "1"}, np.zeros(10)),
           series({"instance": "n2", "cpu": "0"}, np.ones(10))]  # fmt: skip
    alignment = align({"cpu": cpu}, ["instance"], TIMES, 10)
    assert alignment.skipped == {("n1",): "ambiguous_series"}
    assert list(alignment.frames) == [("n2",)]
    assert alignment.problems == ['cpu: 2 series fall in group {instance="n1"}, differing in cpu']


def test_groups_beyond_max_groups_are_skipped_in_label_order():
    results = {"x": [series({"host": h}, np.ones(10)) for h in "dcba"]}
    alignment = align(results, ["host"], TIMES, max_groups=2)
    assert sorted(alignment.frames) == [("a",), ("b",)]
    assert alignment.skipped == {("c",): "too_many_groups", ("d",): "too_many_groups"}


def test_gaps_are_filled_as_model_data_fills_them():
    values = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, 3.0], [5.0, np.nan]])
    np.testing.assert_array_equal(fill_gaps(values[[0, 1, 3, 4]]), prepare_array(
        values[[0, 1, 3, 4]]).values)  # fmt: skip
    filled = fill_gaps(values)  # a row with no value at all is filled too
    np.testing.assert_array_equal(filled[:, 0], [2.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(filled[:, 1], [1.0, 5 / 3, 7 / 3, 3.0, 3.0])


def test_training_data_concatenates_usable_groups():
    late = np.full(10, np.nan)
    late[4:] = 5.0  # a series that appeared at the fifth step
    gappy = np.ones(10)
    gappy[:6] = np.nan
    results = {
        "x": [series({"host": "a"}, np.arange(10)), series({"host": "b"}, late),
              series({"host": "c"}, np.ones(10))],
        "y": [series({"host": "a"}, np.ones(10)), series({"host": "b"}, late * 2),
              series({"host": "c"}, gappy)],
    }  # fmt: skip
    data = training_data(align(results, ["host"], TIMES, 10), max_missing=0.2)
    assert data.groups == 2 and data.skipped == {("c",): "missing_data"}
    assert data.values.shape == (16, 2)  # a: 10 rows; b: 6, the rows before it appeared left out
    np.testing.assert_array_equal(data.times[10:], TIMES[4:])
    np.testing.assert_array_equal(data.values[10:, 0], 5.0)
    assert np.isfinite(data.values).all()
