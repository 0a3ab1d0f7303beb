"""The expected band: the posterior predictive of a window's last point, in original units."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from model.band import expected_band, expected_bands, mixture_quantiles, posterior_predictive
from model.errors import DataError


def normal_windows(series: np.ndarray, window: int) -> np.ndarray:
    """Every window of ``series`` (n, D): (n - window + 1, window, D)."""
    return np.lib.stride_tricks.sliding_window_view(series, window, axis=0).transpose(0, 2, 1)


def test_mixture_quantiles_are_exact():
    mean = np.array([[0.0, 10.0], [2.0, 10.0], [5.0, 10.0]])  # (L=3, 2 mixtures)
    std = np.array([[1.0, 2.0], [0.5, 2.0], [2.0, 2.0]])
    quantiles = np.array([0.05, 0.5, 0.95])
    found = mixture_quantiles(mean, std, quantiles)  # (3, 2)
    cdf = ndtr((found[:, None, :] - mean[None]) / std[None]).mean(axis=1)
    np.testing.assert_allclose(cdf, np.broadcast_to(quantiles[:, None], cdf.shape), atol=1e-12)
    # one Gaussian repeated: its own quantiles, 10 +/- 1.6449 * 2
    np.testing.assert_allclose(found[[0, 2], 1], [10 - 3.2897073, 10 + 3.2897073], atol=1e-6)


def test_the_band_is_the_decoders_mixture_in_original_units(detector, synthetic):
    window = synthetic.test[:16]
    lower, mean, upper = expected_band(detector, window)
    means, stds = posterior_predictive(detector, window[None])  # (L, 1, D) normalized
    scale, shift = detector.normalizer.std, detector.normalizer.mean
    np.testing.assert_allclose(mean, means.mean(axis=0)[0] * scale + shift, rtol=1e-9)
    # the bounds are the mixture's 5 % and 95 % quantiles, mapped back
    for bound, q in ((lower, 0.05), (upper, 0.95)):
        z = (bound - shift) / scale
        cdf = ndtr((z[None] - means[:, 0]) / stds[:, 0]).mean(axis=0)
        np.testing.assert_allclose(cdf, q, atol=1e-9)
    assert np.all(lower < mean) and np.all(mean < upper)
    # a longer series: its last window
    again = expected_band(detector, np.concatenate([synthetic.test[:40], window]))
    np.testing.assert_allclose(again[1], mean)


def test_nine_in_ten_normal_next_points_fall_inside_the_90_percent_band(detector, synthetic):
    """Points after the training data, before the first injected anomaly (row 200): each
    one's band from the window ending at it. The session's tiny model (8 epochs) is
    somewhat wide: 0.96 of points inside; better-trained models measure 0.88-0.92
    (docs/pull.md)."""
    windows = normal_windows(synthetic.test[:195], detector.window)
    lower, _, upper = expected_bands(detector, windows)
    last = windows[:, -1]
    inside = (last >= lower) & (last <= upper)  # (N, D)
    assert 0.85 <= inside.mean() <= 0.98, inside.mean(axis=0)
    assert inside.mean(axis=0).min() >= 0.8


def test_a_far_off_point_is_outside_its_band(detector, synthetic):
    window = synthetic.test[:16].copy()
    scale = detector.normalizer.std
    for variable in range(window.shape[1]):
        shifted = window.copy()
        shifted[-1, variable] += 8 * scale[variable]
        lower, _, upper = expected_band(detector, shifted)
        assert shifted[-1, variable] > upper[variable]
        others = np.arange(window.shape[1]) != variable
        assert np.all(lower[others] < upper[others])


def test_bad_windows_are_refused(detector, synthetic):
    with pytest.raises(DataError, match="at least 16 rows"):
        expected_band(detector, synthetic.test[:5])
    with_gap = synthetic.test[:16].copy()
    with_gap[3, 1] = np.nan
    with pytest.raises(DataError, match="finite"):
        expected_band(detector, with_gap)
    with pytest.raises(DataError, match="quantiles"):
        expected_band(detector, synthetic.test[:16], quantiles=(0.9, 0.1))
