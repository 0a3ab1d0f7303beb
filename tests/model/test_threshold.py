"""POT alarm threshold: calibration on known distributions, fallbacks, severity, round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import genpareto

from model.errors import ArtifactError, DataError, TrainingError
from model.threshold import MAX_SHAPE, RESOLUTION, Threshold, exceeds, fit_gpd, fit_threshold

RISK = 1e-3


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.exponential(size=n),
        lambda rng, n: rng.normal(size=n),
        lambda rng, n: rng.standard_t(4, size=n),
    ],
    ids=["exponential", "gaussian", "student-t4"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_pot_threshold_exceedance_is_close_to_risk(draw, seed):
    rng = np.random.default_rng(seed)
    threshold = fit_threshold(draw(rng, 20_000), risk=RISK)
    assert threshold.method == "pot"
    assert threshold.value > threshold.initial
    fresh = draw(rng, 1_000_000)
    observed = np.mean(fresh > threshold.value)
    assert RISK / 2.5 < observed < RISK * 2.5


def test_pot_extrapolates_beyond_empirical_quantile_when_data_is_short():
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=2_000)
    threshold = fit_threshold(scores, risk=1e-4)
    assert threshold.method == "pot"
    assert threshold.value > scores.max()  # a 1e-4 quantile is beyond 2 000 samples
    assert abs(threshold.value - np.log(1e4)) < 3.0  # true quantile of Exp(1): 9.21


def test_fewer_peaks_than_min_peaks_falls_back_to_quantile():
    scores = np.random.default_rng(0).normal(size=200)  # 2 % of 200 = 4 peaks < 10
    threshold = fit_threshold(scores, risk=0.01)
    assert threshold.method == "quantile"
    assert threshold.shape is None and threshold.scale is None
    assert threshold.n_peaks < 10
    assert threshold.value == pytest.approx(np.quantile(scores, 0.99))


def test_constant_scores_fall_back_and_alarm_above_the_constant():
    threshold = fit_threshold(np.full(500, 2.5))
    assert threshold.method == "quantile"
    assert threshold.value == 2.5
    assert threshold.n_peaks == 0
    severity = threshold.severity([2.0, 2.5, 3.0])
    assert severity[0] == 0.0 and severity[1] == 0.0
    assert severity[2] > 0.99


def one_value_mostly(rng: np.random.Generator, n: int, value: float = -21.64) -> np.ndarray:
    """Scores of a constant channel: 90 % of its windows score one value, the rest less,
    each rounded differently in its last digits (another batch, another chunk)."""
    scores = np.where(rng.random(n) < 0.9, value, value - rng.exponential(size=n))
    return scores * (1.0 + rng.normal(0.0, 1e-13, size=n))


def test_a_tie_at_the_top_of_the_scores_has_no_peaks_of_rounding_noise():
    rng = np.random.default_rng(0)
    threshold = fit_threshold(one_value_mostly(rng, 1_000))
    assert threshold.n_peaks == 0 and threshold.method == "quantile"
    assert threshold.value == pytest.approx(-21.64)
    again = one_value_mostly(rng, 10_000)  # the same value, rounded otherwise
    assert not exceeds(again, threshold.value).any()
    assert exceeds(np.array([-21.63, 0.0]), threshold.value).all()  # a real rise is


@pytest.mark.parametrize("level", [-5e6, -21.64, 0.0, 2.0, 3e4])
def test_exceeds_is_above_beyond_the_resolution_relative_to_the_level(level):
    step = RESOLUTION * max(1.0, abs(level))
    scores = np.array([np.nan, level, level + step / 2, level + 2 * step, level - 1.0])
    assert exceeds(scores, level).tolist() == [False, False, False, True, False]


def test_risk_not_in_the_tail_falls_back_to_quantile():
    scores = np.random.default_rng(0).normal(size=5_000)
    threshold = fit_threshold(scores, risk=0.1)  # 0.1 > 2 % peaks: z_q would be below t0
    assert threshold.method == "quantile"
    assert threshold.value == pytest.approx(np.quantile(scores, 0.9))
    assert threshold.severity(threshold.value) == pytest.approx(0.9)


def test_nan_scores_are_dropped():
    rng = np.random.default_rng(0)
    scores = rng.exponential(size=5_000)
    with_nan = np.concatenate([scores, np.full(300, np.nan)])
    assert fit_threshold(with_nan) == fit_threshold(scores)
    assert fit_threshold(with_nan).n_scores == 5_000


@pytest.mark.parametrize("scores", [np.full(10, np.nan), np.array([1.0, np.nan]), np.array([])])
def test_too_few_finite_scores_raise_training_error(scores):
    with pytest.raises(TrainingError, match="finite score"):
        fit_threshold(scores)


@pytest.mark.parametrize("kwargs", [{"risk": 0.0}, {"risk": 1.5}, {"init_level": 1.0}])
def test_bad_parameters_raise_data_error(kwargs):
    with pytest.raises(DataError, match="invalid threshold parameter"):
        fit_threshold(np.arange(100.0), **kwargs)


@pytest.mark.parametrize("min_peaks, method", [(10, "pot"), (10**6, "quantile")])
def test_severity_is_monotone_bounded_and_one_minus_risk_at_threshold(min_peaks, method):
    scores = np.random.default_rng(0).gamma(2.0, size=5_000)
    threshold = fit_threshold(scores, risk=0.002, min_peaks=min_peaks)
    assert threshold.method == method
    grid = np.linspace(-1.0, 3 * threshold.value, 20_001)
    severity = threshold.severity(grid)
    assert np.all((severity >= 0) & (severity <= 1))
    assert np.all(np.diff(severity) >= 0)
    assert threshold.severity(threshold.value) == pytest.approx(1 - 0.002, abs=1e-9)
    assert threshold.severity(-1.0) == 0.0
    assert threshold.severity(np.median(scores)) == pytest.approx(0.5, abs=0.02)


def test_exceedance_probability_propagates_nan_and_keeps_shape():
    threshold = fit_threshold(np.random.default_rng(0).exponential(size=3_000))
    probs = threshold.exceedance_probability(np.array([[0.1, np.nan], [50.0, 1.0]]))
    assert probs.shape == (2, 2)
    assert np.isnan(probs[0, 1])
    assert probs[1, 0] < RISK < probs[0, 0]


@pytest.mark.parametrize("n", [5_000, 50])
def test_to_dict_from_dict_round_trip_through_json(n):
    threshold = fit_threshold(np.random.default_rng(0).lognormal(size=n))
    restored = Threshold.from_dict(json.loads(json.dumps(threshold.to_dict())))
    assert restored == threshold
    assert len(restored.reference) == 101
    grid = np.linspace(0, 2 * threshold.value, 50)
    np.testing.assert_array_equal(restored.severity(grid), threshold.severity(grid))


def test_from_dict_rejects_malformed_data():
    data = fit_threshold(np.random.default_rng(0).exponential(size=3_000)).to_dict()
    with pytest.raises(ArtifactError, match="missing keys"):
        Threshold.from_dict({k: v for k, v in data.items() if k != "scale"})
    with pytest.raises(ArtifactError, match="unknown method"):
        Threshold.from_dict({**data, "method": "magic"})
    with pytest.raises(ArtifactError, match="invalid field type"):
        Threshold.from_dict({**data, "value": "high"})


@pytest.mark.parametrize("init_level", [0.9, 0.975, 0.985, 0.995])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_severity_does_not_drop_at_the_peaks_threshold(init_level, seed):
    scores = np.random.default_rng(seed).pareto(1.5, size=3_000)  # heavy, convex quantiles
    threshold = fit_threshold(scores, risk=1e-4, init_level=init_level)
    assert threshold.method == "pot"
    t0 = threshold.initial
    grid = np.concatenate([np.linspace(0.5 * t0, t0, 1_001), [np.nextafter(t0, np.inf)]])
    assert np.all(np.diff(threshold.severity(grid)) >= 0)


def test_quantile_fallback_floors_probability_beyond_the_data():
    scores = np.random.default_rng(0).normal(size=999)
    threshold = fit_threshold(scores, risk=0.01, min_peaks=10**6)
    probs = threshold.exceedance_probability([scores.max() + 1.0, 1e9])
    np.testing.assert_allclose(probs, 1 / 1_000)
    assert threshold.severity(1e9) < 1.0


@pytest.mark.parametrize("shape", [0.2, -0.3])
def test_gpd_fit_matches_scipy_below_the_shape_bound(shape):
    y = genpareto.rvs(shape, scale=2.0, size=500, random_state=np.random.default_rng(4))
    fitted = fit_gpd(y)
    reference = genpareto.fit(y, floc=0)
    assert fitted == pytest.approx((reference[0], reference[2]), rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tail_heavier_than_the_bound_is_fitted_at_the_bound(seed):
    y = genpareto.rvs(3.0, scale=1.0, size=40, random_state=np.random.default_rng(seed))
    assert genpareto.fit(y, floc=0)[0] > MAX_SHAPE  # unconstrained: far heavier
    shape, scale = fit_gpd(y)
    assert shape == MAX_SHAPE

    # the scale is the likeliest for that shape
    def log_likelihood(s):
        return genpareto.logpdf(y, shape, scale=s).sum()

    assert log_likelihood(scale) > max(log_likelihood(scale * 1.01), log_likelihood(scale / 1.01))
