"""The expected band of a point: the model's posterior predictive, in original units.

For a window x (T, D) whose last step is the point, the encoder gives q(z|x). With
the detector's L fixed draws eps_l (the ones its scores use), z_l = mu + sigma eps_l
and the decoder gives N(mean_l[t, d], std_l[t, d]^2) for every step. The posterior
predictive of the last step is the equal-weight mixture of those L Gaussians:

    p(x_T,d | x) ~= 1/L sum_l N(mean_l[T, d], std_l[T, d]^2)

Its mean is the mean of the mean_l; its bounds are the mixture's exact quantiles
(by default 5 % and 95 %: a 90 % central band), found per variable by bisection on
the mixture's CDF. The normalization is affine and increasing, so the quantiles and
the mean map back to original units exactly.

This is what normal values of the point look like given its window (the point
included, as in its reconstruction probability), not a forecast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import ndtr

from model.errors import DataError

if TYPE_CHECKING:
    from model.detector import Detector

BAND_QUANTILES = (0.05, 0.95)
_BISECTION_STEPS = 60  # halves the bracket to ~1e-18 of its width: float64's resolution


def mixture_quantiles(mean: np.ndarray, std: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Quantiles of equal-weight Gaussian mixtures.

    mean, std: (L, ...) the L components of each mixture; quantiles: (Q,) in (0, 1).
    Returns (Q, ...). Bisection on the CDF, all mixtures and quantiles at once.
    """
    spread = 10.0 * std.max(axis=0)  # (...): Phi(-10) ~ 1e-23, beyond any useful quantile
    low = np.broadcast_to(mean.min(axis=0) - spread, (len(quantiles), *mean.shape[1:])).copy()
    high = np.broadcast_to(mean.max(axis=0) + spread, low.shape).copy()  # (Q, ...)
    target = quantiles.reshape(-1, *([1] * (mean.ndim - 1)))  # (Q, 1, ...)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        cdf = ndtr((middle[:, None] - mean[None]) / std[None]).mean(axis=1)  # (Q, ...)
        below = cdf < target
        low = np.where(below, middle, low)
        high = np.where(below, high, middle)
    return 0.5 * (low + high)


@torch.inference_mode()
def posterior_predictive(detector: Detector, windows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The L mixture components of each window's last step, normalized units:
    windows (N, T, D) in original units -> mean, std, each (L, N, D)."""
    n, steps, d = windows.shape
    x = torch.from_numpy(detector.normalize(windows.reshape(-1, d))).view(n, steps, d)
    mu, logvar = detector.net.encode(x)  # (N, Z)
    noise = detector.noise  # (L, Z)
    z = mu.unsqueeze(0) + noise.unsqueeze(1) * torch.exp(0.5 * logvar).unsqueeze(0)  # (L, N, Z)
    mean, std = detector.net.decode(z.reshape(-1, z.shape[-1]), steps)  # (L*N, T, D)
    shape = (len(noise), n, d)
    return mean[:, -1].reshape(shape).double().numpy(), std[:, -1].reshape(shape).double().numpy()


def expected_bands(
    detector: Detector, windows: np.ndarray, quantiles: tuple[float, float] = BAND_QUANTILES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``expected_band`` of N windows at once: windows (N, T, D) -> lower, mean, upper (N, D)."""
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3 or windows.shape[1] != detector.window:
        raise DataError(f"windows must have shape (N, {detector.window}, {detector.n_features})")
    if not np.isfinite(windows).all():
        raise DataError("windows must be finite (fill gaps first)")
    low_q, high_q = quantiles
    if not 0.0 < low_q < high_q < 1.0:
        raise DataError(f"quantiles must satisfy 0 < lower < upper < 1, got {quantiles}")
    mean, std = posterior_predictive(detector, windows)  # (L, N, D) each
    bounds = mixture_quantiles(mean, std, np.array([low_q, high_q]))  # (2, N, D)
    normalizer = detector.normalizer
    lower, upper = (normalizer.inverse_transform(b) for b in bounds)
    return lower, normalizer.inverse_transform(mean.mean(axis=0)), upper


def expected_band(
    detector: Detector, window: np.ndarray, quantiles: tuple[float, float] = BAND_QUANTILES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bound, mean and upper bound (each (D,), original units) of the posterior
    predictive of the last point of ``window`` (T, D), T the model's window (a longer
    series: its last T rows)."""
    window = np.asarray(window, dtype=np.float64)
    if window.ndim != 2 or len(window) < detector.window:
        raise DataError(f"a window needs at least {detector.window} rows of shape (T, D)")
    lower, mean, upper = expected_bands(detector, window[None, -detector.window :], quantiles)
    return lower[0], mean[0], upper[0]
