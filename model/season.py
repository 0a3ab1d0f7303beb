"""Daily (or any) seasons: a flag must stand out from the same phase one period back.

A metric with a daily pattern that the model has not fully learnt (a nightly batch
job, a traffic peak) crosses its limit at the same hour every day, and each crossing
pages. Where a model's training data are periodic, a point above the limit is flagged
only where its ranking score, or that of the first point of its run above the limit,
is above the highest ranking score within half a window of the same phase one period
earlier (``seasonal_reference``, applied by ``model/alarm.py``): the start of an
anomaly rises above what the series did at that time the period before, and a long
anomaly is not compared with its own start one period later.

The period is found once, at training (``detect_period``): the lag of the highest
local peak of the variables' mean autocorrelation over the training part (its last
``SEASON_SPAN`` x the longest period allowed, ``ModelConfig.max_period``), between 2T
and that longest period (and half the part), if that peak is at
least ``SEASON_ACF`` and stands at least ``SEASON_PROMINENCE`` above the lowest
autocorrelation before it. The autocorrelation is the biased estimate (divided by n,
not n - lag), which discounts a lag that the training part holds only a few times.
A slowly varying series (a trend, a random walk) has a high autocorrelation that
falls with the lag and no such peak: it has no period.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model.scoring import delayed

SEASON_ACF = 0.4  # the autocorrelation a period's peak reaches at least
SEASON_PROMINENCE = 0.2  # ... and how far above the lowest autocorrelation before it
SEASON_SPAN = 4  # the autocorrelation is taken over at most this many longest periods
BLOCK = 64  # variables transformed at a time (bounds the memory)


def detect_period(values: np.ndarray, shortest: int, longest: int) -> int:
    """The period of ``values`` (n, D) in points, between ``shortest`` and ``longest``
    (and n // 2); 0 if it has none (the module doc). Variables that do not move are left
    out."""
    if longest <= shortest:
        return 0
    x = np.asarray(values, dtype=float)[-SEASON_SPAN * longest :]
    x = x[:, np.isfinite(x).all(axis=0)]
    x = x[:, x.std(axis=0) > 0]
    n = len(x)
    longest = min(longest, n // 2)
    if x.shape[1] == 0 or longest <= shortest:
        return 0
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    acf = np.zeros(longest + 2)
    for start in range(0, x.shape[1], BLOCK):
        spectrum = np.fft.rfft(x[:, start : start + BLOCK], 2 * n, axis=0)  # no wrap-around
        acf += np.fft.irfft(np.abs(spectrum) ** 2, 2 * n, axis=0)[: longest + 2].sum(axis=1)
    acf /= acf[0]
    lags = np.arange(max(shortest, 1), longest + 1)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
    if not len(peaks):
        return 0
    lag = int(peaks[np.argmax(acf[peaks])])
    prominence = acf[lag] - acf[1:lag].min()
    return lag if acf[lag] >= SEASON_ACF and prominence >= SEASON_PROMINENCE else 0


def seasonal_reference(
    ranking: np.ndarray, past: list[float], period: int, half: int
) -> tuple[np.ndarray, list[float]]:
    """Per point of ``ranking`` (n,), the highest ranking score of the points ``period``
    - ``half`` to ``period`` + ``half`` before it (unscored or infinite ones left out);
    NaN where fewer than ``half`` + 1 of them are there. ``past``: the ranking scores
    before ``ranking`` (NaN: left out), oldest first. Also returns the last ``period`` +
    ``half`` scores, the ``past`` of the next chunk."""
    own = np.where(np.isfinite(ranking), ranking, np.nan)
    history = np.concatenate([np.asarray(past, dtype=float), own])
    rolling = pd.Series(history).rolling(2 * half + 1, min_periods=half + 1)
    highest = rolling.max().to_numpy()  # [k]: the window ending at k
    reference = delayed(highest, period - half)  # point k's: the window ending at k - P + h
    return reference[len(past) :], history[-(period + half) :].tolist()
