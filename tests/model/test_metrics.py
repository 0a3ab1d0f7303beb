"""Detection metrics through TSB-AD's code: sanity of extremes, validation, window length."""

from __future__ import annotations

import numpy as np
import pytest

from model.errors import DataError
from model.evaluation.metrics import detection_metrics, sliding_window_for

N = 2_000
WINDOW = 20
KEYS = {"VUS-PR", "VUS-ROC", "AUC-PR", "AUC-ROC"}


@pytest.fixture(scope="module")
def label() -> np.ndarray:
    y = np.zeros(N, dtype=int)
    for start in (300, 900, 1500):
        y[start : start + 30] = 1
    return y


def test_perfect_score_gives_near_one(label):
    score = label + 0.01 * np.random.default_rng(0).random(N)
    metrics = detection_metrics(score, label, WINDOW)
    assert set(metrics) == KEYS
    assert all(type(v) is float for v in metrics.values())
    assert metrics["AUC-PR"] > 0.99 and metrics["AUC-ROC"] > 0.99
    assert metrics["VUS-PR"] > 0.95 and metrics["VUS-ROC"] > 0.95


def test_random_score_gives_low_values(label):
    score = np.random.default_rng(1).random(N)
    metrics = detection_metrics(score, label, WINDOW)
    assert metrics["AUC-PR"] < 0.15
    assert metrics["VUS-PR"] < 0.2
    assert 0.35 < metrics["AUC-ROC"] < 0.65


def test_metrics_ignore_monotone_rescaling(label):
    score = np.random.default_rng(2).random(N) + 0.5 * label
    assert detection_metrics(score, label, WINDOW) == pytest.approx(
        detection_metrics(10 * score - 3, label, WINDOW)
    )


@pytest.mark.parametrize("value, word", [(0, "normal"), (1, "anomalies")])
def test_single_class_labels_raise_data_error(value, word):
    with pytest.raises(DataError, match=f"all {word}"):
        detection_metrics(np.random.default_rng(0).random(N), np.full(N, value), WINDOW)


def test_invalid_inputs_raise_data_error(label):
    score = np.random.default_rng(0).random(N)
    with pytest.raises(DataError, match="NaN"):
        detection_metrics(np.where(label == 1, np.nan, score), label, WINDOW)
    with pytest.raises(DataError, match="equal"):
        detection_metrics(score[:-1], label, WINDOW)
    with pytest.raises(DataError, match="only 0"):
        detection_metrics(score, label * 2, WINDOW)
    with pytest.raises(DataError, match="sliding_window"):
        detection_metrics(score, label, -1)


@pytest.mark.parametrize("period", [50, 24])
def test_sliding_window_for_sine_finds_its_period(period):
    t = np.arange(3_000)
    series = np.sin(2 * np.pi * t / period)
    assert abs(sliding_window_for(series) - period) <= 1
    two_columns = np.column_stack([series, np.random.default_rng(0).normal(size=t.size)])
    assert abs(sliding_window_for(two_columns) - period) <= 1


def test_sliding_window_for_rejects_nan():
    with pytest.raises(DataError, match="NaN"):
        sliding_window_for(np.array([1.0, np.nan, 2.0]))


def test_the_wrapper_equals_tsb_ads_own_get_metrics(label):
    """Our four metrics are TSB-AD's ``get_metrics`` values on the same fixed input."""
    from TSB_AD.evaluation.metrics import get_metrics

    n = 600  # get_metrics also computes the slow F1 variants: a short series
    rng = np.random.default_rng(7)
    y = label[:n]
    score = rng.random(n) + 0.8 * np.convolve(y, np.ones(9) / 9, mode="same")  # (n,)
    theirs = get_metrics(score, y, slidingWindow=WINDOW)
    ours = detection_metrics(score, y, WINDOW)
    assert ours == {key: pytest.approx(theirs[key], abs=1e-12) for key in KEYS}
    assert 0.2 < ours["VUS-PR"] < 0.95  # an input where the value is informative
