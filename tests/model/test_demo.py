"""Tests for model.evaluation.demo: determinism, realism checks and label/event consistency."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model.data import load_table, prepare_frame
from model.errors import DataError
from model.evaluation.demo import ANOMALY_KINDS, DEMO_FEATURES, WARMUP_ROWS, make_demo, write_demo


@pytest.fixture(scope="module")
def demo():
    return make_demo(seed=0)


def test_shapes_and_columns(demo):
    assert list(demo.train.columns) == ["timestamp", *DEMO_FEATURES]
    assert list(demo.test.columns) == ["timestamp", *DEMO_FEATURES, "label"]
    assert len(demo.train) == 21 * 144 and len(demo.test) == 7 * 144
    assert demo.test["label"].dtype.kind == "i"
    assert set(demo.test["label"].unique()) == {0, 1}


def test_same_seed_same_data_other_seed_differs(demo):
    again = make_demo(seed=0)
    pd.testing.assert_frame_equal(demo.train, again.train)
    pd.testing.assert_frame_equal(demo.test, again.test)
    assert demo.events == again.events
    other = make_demo(seed=1)
    assert not np.allclose(demo.train["cpu_util"], other.train["cpu_util"])


def test_test_continues_train_in_time(demo):
    stamps = pd.concat([demo.train["timestamp"], demo.test["timestamp"]], ignore_index=True)
    steps = stamps.diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(minutes=10)]


def test_plausible_ranges(demo):
    both = pd.concat([demo.train, demo.test.drop(columns="label")])
    assert both["cpu_util"].between(0, 100).all()
    assert (both[["load_avg", "net_in_mbps", "net_out_mbps"]] >= 0).all().all()
    assert both["latency_ms"].min() >= 1
    assert both["mem_used_gb"].between(4, 64).all()
    assert not both[DEMO_FEATURES].isna().any().any()


def test_correlations_and_seasonality(demo):
    train = demo.train
    corr = train[DEMO_FEATURES].corr()
    assert corr.loc["net_in_mbps", "net_out_mbps"] > 0.9
    assert corr.loc["cpu_util", "load_avg"] > 0.9
    assert corr.loc["cpu_util", "latency_ms"] > 0.7
    hour = train["timestamp"].dt.hour
    assert train.loc[hour == 14, "cpu_util"].mean() > 2 * train.loc[hour == 2, "cpu_util"].mean()
    weekend = train["timestamp"].dt.day_of_week >= 5
    assert (
        train.loc[weekend, "net_in_mbps"].mean() < 0.85 * train.loc[~weekend, "net_in_mbps"].mean()
    )


def test_memory_creeps_up(demo):
    daily = demo.train.groupby(demo.train["timestamp"].dt.date)["mem_used_gb"].mean()
    slope = np.polyfit(np.arange(len(daily)), daily.to_numpy(), 1)[0]  # GB per day
    assert 0.02 < slope < 0.2


def test_events_cover_all_kinds_and_match_labels(demo):
    events = demo.events
    assert {e["kind"] for e in events} == set(ANOMALY_KINDS)
    expected = np.zeros(len(demo.test), dtype=int)
    for event in events:
        assert event["start"] >= WARMUP_ROWS
        assert set(event["variables"]) <= set(DEMO_FEATURES)
        start_time = pd.Timestamp(event["start_time"])
        assert demo.test["timestamp"].iloc[event["start"]] == start_time
        assert expected[event["start"] : event["end"]].sum() == 0  # no overlap
        expected[event["start"] : event["end"]] = 1
    np.testing.assert_array_equal(demo.test["label"].to_numpy(), expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_event_durations(seed):
    hours = {
        "level_shift": (2.9, 6.1),
        "variance_change": (2.9, 6.1),
        "broken_correlation": (3.9, 6.1),
    }
    for event in make_demo(seed).events:
        steps = event["end"] - event["start"]
        if event["kind"] == "spike":
            assert 1 <= steps <= 3
        else:
            low, high = hours[event["kind"]]
            assert low <= steps / 6 <= high


def _residual(frame: pd.DataFrame, name: str) -> np.ndarray:
    smooth = frame[name].rolling(13, center=True, min_periods=1).median()
    return (frame[name] - smooth).to_numpy()


def test_anomalies_visible_but_normal_rows_unchanged(demo):
    test = demo.test
    for event in demo.events:
        root = event["variables"][0]
        rows = slice(event["start"], event["end"])
        if event["kind"] == "spike":
            noise = np.std(_residual(test.iloc[:WARMUP_ROWS], root))
            assert test[root].iloc[rows].max() - test[root].iloc[event["start"] - 3] > 4 * noise
        elif event["kind"] == "broken_correlation":
            ratio = test["net_out_mbps"] / test["net_in_mbps"]
            normal = ratio[test["label"] == 0]
            inside = ratio.iloc[rows]
            assert abs(inside - normal.median()).max() > 5 * normal.std()


def test_variance_change_raises_spread():
    for seed in range(4):
        demo = make_demo(seed)
        for event in demo.events:
            if event["kind"] != "variance_change":
                continue
            root = event["variables"][0]
            resid = _residual(demo.test, root)
            inside = resid[event["start"] : event["end"]].std()
            outside = resid[demo.test["label"].to_numpy() == 0].std()
            assert inside > 2 * outside


def test_frames_pass_data_validation(demo):
    train = prepare_frame(demo.train)
    test = prepare_frame(demo.test, feature_names=DEMO_FEATURES, ignore_columns=["label"])
    assert train.feature_names == DEMO_FEATURES
    assert test.values.shape == (len(demo.test), len(DEMO_FEATURES))
    assert all(r == 0.0 for r in test.fill_ratio.values())


def test_write_demo(tmp_path, demo):
    paths = write_demo(tmp_path / "out" / "demo", seed=0)
    assert set(paths) == {"train", "test", "events"}
    assert all(p.is_file() and p.parent == tmp_path / "out" / "demo" for p in paths.values())
    assert json.loads(paths["events"].read_text()) == demo.events
    test = pd.read_csv(paths["test"])
    np.testing.assert_array_equal(test["label"].to_numpy(), demo.test["label"].to_numpy())
    table = load_table(paths["train"])
    np.testing.assert_allclose(table.values, demo.train[DEMO_FEATURES].to_numpy())


def test_other_step_and_too_short_test():
    coarse = make_demo(seed=0, train_days=3, test_days=7, step_minutes=30)
    assert len(coarse.train) == 3 * 48 and len(coarse.test) == 7 * 48
    assert coarse.train["timestamp"].diff().iloc[1] == pd.Timedelta(minutes=30)
    assert coarse.test["label"].sum() == sum(e["end"] - e["start"] for e in coarse.events)
    with pytest.raises(DataError, match="too short"):
        make_demo(seed=0, test_days=1)
