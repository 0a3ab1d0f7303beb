"""Tests for model.data: reading, validation, missing values and normalization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.data import (
    Table,
    load_table,
    prepare_array,
    prepare_frame,
    read_frame,
)
from model.errors import DataError, FeatureMismatchError
from model.normalize import Normalizer


def _frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="10min"),
            "cpu": np.arange(n, dtype=float),
            "mem": np.arange(n, dtype=float) * 2 + 1,
            "label": [0] * n,
        }
    )


# ---------------------------------------------------------------- reading files


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq", ".tsv", ".txt"])
def test_file_round_trip(tmp_path, suffix):
    frame = _frame()
    path = tmp_path / f"data{suffix}"
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    table = load_table(path, ignore_columns=["label"])
    assert table.feature_names == ["cpu", "mem"]
    np.testing.assert_array_equal(table.values, frame[["cpu", "mem"]].to_numpy())
    assert table.timestamps.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(table.timestamps, frame["timestamp"].to_numpy("datetime64[ns]"))


def test_read_frame_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*nope.csv"):
        read_frame(tmp_path / "nope.csv")


def test_read_frame_unknown_suffix(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("a\n1\n")
    with pytest.raises(DataError, match=r"data\.xlsx.*unknown file type '\.xlsx'"):
        read_frame(path)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_read_frame_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=r"empty.*empty\.csv"):
        read_frame(path)


def test_read_frame_header_only(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("timestamp,cpu\n")
    with pytest.raises(DataError, match=r"no data rows.*header\.csv"):
        read_frame(path)


def test_read_frame_unparsable_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('a,b\n1,2\n"3,4\n5,6,7,8\n')
    with pytest.raises(DataError, match=r"could not parse 'bad\.csv'"):
        read_frame(path)


def test_read_frame_unparsable_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match=r"could not parse 'bad\.parquet'"):
        read_frame(path)


def test_csv_with_gaps_and_numeric_strings(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("time,a,b\n2024-01-01 00:00,1,10\n2024-01-01 00:10,,20\n2024-01-01 00:20,3,\n")
    table = load_table(path)
    np.testing.assert_allclose(table.values, [[1, 10], [2, 20], [3, 20]])
    assert table.fill_ratio == pytest.approx({"a": 1 / 3, "b": 1 / 3})


# ---------------------------------------------------------------- timestamps


def test_timestamp_autodetected_case_insensitive():
    frame = _frame().rename(columns={"timestamp": "DateTime"})
    table = prepare_frame(frame, ignore_columns=["label"])
    assert table.feature_names == ["cpu", "mem"]
    assert table.timestamps is not None and len(table.timestamps) == 6


def test_no_timestamp_column():
    table = prepare_frame(_frame().drop(columns=["timestamp", "label"]))
    assert table.timestamps is None
    assert table.feature_names == ["cpu", "mem"]


def test_explicit_timestamp_column_and_tz_to_utc():
    frame = pd.DataFrame({"when": ["2024-01-01T01:00+01:00", "2024-01-01T00:10Z"], "x": [1, 2]})
    table = prepare_frame(frame, timestamp_column="when")
    assert table.feature_names == ["x"]
    expected = np.array(["2024-01-01T00:00", "2024-01-01T00:10"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(table.timestamps, expected)


def test_explicit_timestamp_column_must_exist():
    with pytest.raises(DataError, match="timestamp column 'ts' not found") as info:
        prepare_frame(_frame(), timestamp_column="ts")
    assert info.value.field == "ts"


def test_numeric_timestamps_are_epoch_seconds():
    frame = pd.DataFrame({"time": [0, 600, 1200], "x": [1.0, 2.0, 3.0]})
    table = prepare_frame(frame)
    assert pd.Timestamp(table.timestamps[1]) == pd.Timestamp("1970-01-01 00:10")


def test_unparsable_timestamp_names_column_and_row():
    frame = pd.DataFrame({"date": ["2024-01-01", "2024-01-02", "yesterday"], "x": [1, 2, 3]})
    with pytest.raises(DataError, match="'date'.*'yesterday' at row 2") as info:
        prepare_frame(frame)
    assert info.value.field == "date"


def test_missing_timestamp_names_row():
    frame = pd.DataFrame({"date": ["2024-01-01", None, "2024-01-03"], "x": [1, 2, 3]})
    with pytest.raises(DataError, match="'date'.*missing at row 1"):
        prepare_frame(frame)


def test_duplicated_timestamp_names_row():
    frame = _frame()
    frame.loc[3, "timestamp"] = frame.loc[2, "timestamp"]
    with pytest.raises(DataError, match="duplicated timestamp.*row 3") as info:
        prepare_frame(frame)
    assert info.value.field == "timestamp"


def test_decreasing_timestamp_names_row():
    frame = _frame()
    frame.loc[4, "timestamp"] = pd.Timestamp("2023-12-31")
    with pytest.raises(DataError, match="decrease at row 4"):
        prepare_frame(frame)


# ---------------------------------------------------------------- columns and values


def test_ignore_columns_dropped_and_unknown_ignored():
    table = prepare_frame(_frame(), ignore_columns=["label", "not_there"])
    assert table.feature_names == ["cpu", "mem"]
    assert prepare_frame(_frame(), ignore_columns="label").feature_names == ["cpu", "mem"]


def test_non_numeric_column_names_column_and_value():
    frame = _frame()
    frame["host"] = ["a", "b", "c", "d", "e", "f"]
    with pytest.raises(DataError, match="column 'host' is not numeric: row 0 holds 'a'") as info:
        prepare_frame(frame)
    assert info.value.field == "host"


def test_numeric_strings_and_missing_tokens_accepted():
    frame = pd.DataFrame({"x": ["1.5", "2", "", "nan", "5"], "y": [1, 2, 3, 4, 5]}, dtype=object)
    table = prepare_frame(frame)
    np.testing.assert_allclose(table.values[:, 0], [1.5, 2, 3, 4, 5])
    assert table.fill_ratio["x"] == pytest.approx(0.4)


def test_booleans_cast_to_float():
    table = prepare_frame(pd.DataFrame({"up": [True, False, True]}))
    np.testing.assert_array_equal(table.values[:, 0], [1.0, 0.0, 1.0])


def test_datetime_feature_column_refused():
    frame = pd.DataFrame({"x": [1, 2], "seen": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    with pytest.raises(DataError, match="column 'seen' holds dates"):
        prepare_frame(frame)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_value_names_column(bad):
    frame = _frame()
    frame.loc[2, "mem"] = bad
    with pytest.raises(DataError, match="column 'mem'.*infinite.*row 2") as info:
        prepare_frame(frame, ignore_columns=["label"])
    assert info.value.field == "mem"


def test_all_missing_column_names_it():
    frame = _frame()
    frame["mem"] = np.nan
    with pytest.raises(DataError, match="column 'mem' has no values") as info:
        prepare_frame(frame, ignore_columns=["label"])
    assert info.value.field == "mem"


def test_all_missing_row_names_row_and_timestamp():
    frame = _frame()
    frame.loc[3, ["cpu", "mem"]] = np.nan
    with pytest.raises(DataError, match=r"row 3 \(2024-01-01 00:30:00\).*every variable"):
        prepare_frame(frame, ignore_columns=["label"])


def test_all_missing_row_without_timestamps():
    with pytest.raises(DataError, match="row 1 has no values"):
        prepare_array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]])


def test_fill_interpolates_and_holds_edges():
    frame = pd.DataFrame(
        {
            "a": [np.nan, 1.0, np.nan, np.nan, 4.0, np.nan],
            "b": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    table = prepare_frame(frame)
    np.testing.assert_allclose(table.values[:, 0], [1, 1, 2, 3, 4, 4])
    np.testing.assert_allclose(table.values[:, 1], [1, 2, 3, 4, 5, 6])
    assert table.fill_ratio == {"a": pytest.approx(4 / 6), "b": 0.0}
    assert np.isfinite(table.values).all()


def test_no_rows_and_no_features():
    with pytest.raises(DataError, match="no rows"):
        prepare_frame(_frame().iloc[:0])
    with pytest.raises(DataError, match="no feature columns"):
        prepare_frame(_frame()[["timestamp", "label"]], ignore_columns=["label"])


def test_duplicated_names_after_str_conversion():
    frame = pd.DataFrame([[1.0, 2.0]], columns=[1, "1"])
    with pytest.raises(DataError, match="duplicated column name.*1") as info:
        prepare_frame(frame)
    assert info.value.field == "1"


def test_column_names_become_str():
    table = prepare_frame(pd.DataFrame({0: [1.0, 2.0], 1: [3.0, 4.0]}))
    assert table.feature_names == ["0", "1"]


# ---------------------------------------------------------------- feature names


def test_feature_names_reorder_columns():
    table = prepare_frame(_frame(), feature_names=["mem", "cpu"], ignore_columns=["label"])
    assert table.feature_names == ["mem", "cpu"]
    np.testing.assert_array_equal(table.values[:, 0], _frame()["mem"].to_numpy())


def test_feature_names_missing_variables():
    with pytest.raises(FeatureMismatchError, match="missing variable.*disk, net.*expects") as info:
        prepare_frame(
            _frame(), feature_names=["cpu", "disk", "mem", "net"], ignore_columns=["label"]
        )
    assert info.value.field == "disk"


def test_feature_names_unexpected_variables():
    with pytest.raises(FeatureMismatchError, match="unexpected variable.*label") as info:
        prepare_frame(_frame(), feature_names=["cpu", "mem"])
    assert info.value.field == "label"


def test_prepare_array_shapes_and_default_names():
    table = prepare_array(np.arange(4))
    assert isinstance(table, Table)
    assert table.values.shape == (4, 1) and table.values.dtype == np.float64
    assert table.feature_names == ["x0"]
    assert prepare_array(np.ones((3, 2))).feature_names == ["x0", "x1"]


def test_prepare_array_fills_and_checks():
    table = prepare_array([[1.0, np.nan], [3.0, 4.0]], feature_names=["a", "b"])
    np.testing.assert_allclose(table.values, [[1, 4], [3, 4]])
    assert table.fill_ratio == {"a": 0.0, "b": 0.5}
    with pytest.raises(DataError, match="column 'b'.*infinite"):
        prepare_array([[1.0, np.inf]], feature_names=["a", "b"])
    with pytest.raises(DataError, match="shape"):
        prepare_array(np.ones((2, 2, 2)))


def test_prepare_array_wrong_width():
    with pytest.raises(FeatureMismatchError, match=r"expected 3 variable\(s\).*got 2 column"):
        prepare_array(np.ones((5, 2)), feature_names=["a", "b", "c"])


def test_prepare_array_non_numeric_names_column():
    with pytest.raises(DataError, match="column 'x1' is not numeric.*'oops'"):
        prepare_array(np.array([["1", "2"], ["3", "oops"]], dtype=object))


# ---------------------------------------------------------------- normalizer


def test_normalizer_round_trip_and_constant_column():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.normal(5, 2, 200), np.full(200, 7.0)])  # (200, 2)
    norm = Normalizer.fit(values)
    assert norm.std[1] == 1.0
    z = norm.transform(values)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-4)
    np.testing.assert_array_equal(z[:, 1], 0.0)
    back = norm.inverse_transform(z)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, values, rtol=1e-5)


def test_normalizer_works_on_windows_and_checks_width():
    norm = Normalizer(mean=np.array([1.0, 2.0]), std=np.array([2.0, 4.0]))
    windows = np.full((3, 5, 2), [3.0, 6.0])  # (batch, window, features)
    np.testing.assert_allclose(norm.transform(windows), 1.0)
    with pytest.raises(FeatureMismatchError, match="expected 2 variable"):
        norm.transform(np.ones((4, 3)))


def test_normalizer_dict_round_trip():
    norm = Normalizer.fit(np.array([[1.0, 10.0], [3.0, 10.0]]))
    data = norm.to_dict()
    assert data == {"mean": [2.0, 10.0], "std": [1.0, 1.0]}
    assert all(type(v) is float for v in data["mean"] + data["std"])
    again = Normalizer.from_dict(data)
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)


@pytest.mark.parametrize(
    "data",
    [{"mean": [1.0]}, {"mean": [1.0], "std": [0.0]}, {"mean": [1.0, 2.0], "std": [1.0]}],
)
def test_normalizer_from_bad_dict(data):
    with pytest.raises(DataError):
        Normalizer.from_dict(data)


def test_normalizer_fit_refuses_bad_input():
    with pytest.raises(DataError, match="shape"):
        Normalizer.fit(np.ones(5))
    with pytest.raises(DataError, match="non-finite"):
        Normalizer.fit(np.array([[1.0], [np.nan]]))
