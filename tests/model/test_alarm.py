"""The alarm decision: alarm_score = max(unsmoothed, smoothed score) against a threshold
fitted on unsmoothed validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from model.alarm import SMOOTHED, UNSMOOTHED, decide, threshold_scores
from model.detector import Detector
from model.scoring import SeriesScores, smooth
from model.threshold import fit_threshold
from tests.conftest import TINY

WIDTH = 32


def series(score: np.ndarray) -> SeriesScores:
    """Per-step results with one variable whose -log_prob is the score (no KL)."""
    n = len(score)
    return SeriesScores(-score[:, None], np.zeros(n), score.copy(), np.zeros(n, dtype=bool))


@pytest.fixture
def normal_threshold():
    rng = np.random.default_rng(0)
    return fit_threshold(1.0 + 0.2 * rng.standard_normal(5000), risk=1e-3)


def test_an_infinite_score_is_flagged_with_full_severity(normal_threshold):
    score = np.full(50, 1.0)
    score[20] = np.inf  # log p = -inf: a value far beyond anything seen
    score[:3] = np.nan  # causal warm-up: not scored, not flagged
    scored = decide(series(score), series(score), normal_threshold, baseline=np.zeros(1))
    assert scored.is_anomaly[20] and scored.severity[20] == pytest.approx(1.0)
    assert not scored.is_anomaly[:3].any() and np.isnan(scored.severity[:3]).all()
    assert scored.is_anomaly.sum() == 1


def test_short_spike_is_flagged_though_smoothing_hides_it(normal_threshold):
    score = np.full(400, 1.0)
    score[200:202] = 6.0  # two steps far above the threshold
    raw = series(score)
    smoothed = smooth(raw, WIDTH, WIDTH, causal=False)
    assert smoothed.score.max() < normal_threshold.value < 6.0  # smoothing hides it
    scored = decide(raw, smoothed, normal_threshold, baseline=np.zeros(1))
    np.testing.assert_array_equal(scored.score, smoothed.score)  # the ranking score
    np.testing.assert_array_equal(scored.alarm_score, np.maximum(score, smoothed.score))
    assert scored.is_anomaly[200:202].all()
    assert scored.is_anomaly.sum() == 2
    assert (scored.severity[200:202] > 1 - normal_threshold.risk).all()
    assert scored.severity[:190].max() < 1 - normal_threshold.risk


def test_sustained_rise_is_flagged_where_its_unsmoothed_score_dips(normal_threshold):
    score = np.full(400, 1.0)
    score[100:300] = np.where(np.arange(200) % 2, 1.5, 5.0)  # every other step below
    raw = series(score)
    smoothed = smooth(raw, WIDTH, WIDTH, causal=False)
    scored = decide(raw, smoothed, normal_threshold, baseline=np.zeros(1))
    assert scored.is_anomaly[120:280].all()  # the dips too: the smoothed score is above
    assert not (score[120:280] > normal_threshold.value).all()


def test_severity_follows_the_alarm_score(normal_threshold):
    rng = np.random.default_rng(1)
    raw = series(1.0 + rng.gamma(1.0, 0.5, 500))
    scored = decide(raw, smooth(raw, WIDTH, WIDTH, False), normal_threshold, np.zeros(1))
    order = np.argsort(scored.alarm_score)
    assert (np.diff(scored.severity[order]) >= -1e-12).all()
    np.testing.assert_array_equal(scored.is_anomaly, scored.alarm_score > normal_threshold.value)


def test_causal_warm_up_stays_unflagged_nan(normal_threshold):
    score = np.full(100, 1.0)
    score[:7] = np.nan
    raw = series(score)
    scored = decide(raw, smooth(raw, 8, 8, causal=True), normal_threshold, np.zeros(1))
    assert np.isnan(scored.alarm_score[:7]).all() and np.isnan(scored.severity[:7]).all()
    assert not scored.is_anomaly[:7].any()
    assert np.isfinite(scored.alarm_score[7:]).all()


def test_models_fitted_on_smoothed_scores_alarm_on_them(normal_threshold):
    score = np.full(400, 1.0)
    score[200:202] = 6.0
    raw = series(score)
    smoothed = smooth(raw, WIDTH, WIDTH, causal=False)
    scored = decide(raw, smoothed, normal_threshold, np.zeros(1), fitted_on=SMOOTHED)
    np.testing.assert_array_equal(scored.alarm_score, smoothed.score)
    assert not scored.is_anomaly.any()


@pytest.mark.parametrize(
    ("config", "metadata", "expected"),
    [
        ({"smooth_window": None}, {"threshold_scores": UNSMOOTHED}, UNSMOOTHED),
        ({"smooth_window": None}, {}, SMOOTHED),  # saved while smoothing fitted the threshold
        ({"smooth_window": 32}, {}, SMOOTHED),
        ({"smooth_window": 1}, {}, UNSMOOTHED),
        ({}, {}, UNSMOOTHED),  # saved before smoothing existed
    ],
)
def test_threshold_scores_of_saved_models(config, metadata, expected):
    assert threshold_scores(config, metadata) == expected


def test_threshold_is_fitted_on_unsmoothed_validation_scores(synthetic):
    config = TINY.replace(epochs=2)
    smoothed = Detector.fit(synthetic.train, config.replace(smooth_window=None))
    plain = Detector.fit(synthetic.train, config.replace(smooth_window=1))
    # training does not depend on smoothing, so the same network gives the same threshold
    assert smoothed.threshold == plain.threshold
    assert smoothed.metadata["threshold_scores"] == UNSMOOTHED
    scored = smoothed.score(synthetic.test)
    assert np.diff(scored.score).std() < np.diff(plain.score(synthetic.test).score).std()
