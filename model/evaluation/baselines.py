"""Simple reference detectors, run on the same windows as the LSTM-VAE.

The field keeps finding that simple methods are hard to beat, so the
evaluation prints these beside the model on every run:

* ``pca``: reconstruction error of the window (flattened, z-scored) from the
  principal components that explain 95% of the training windows' variance;
* ``knn``: mean distance of the window to its 5 nearest training windows.

Both are trained on the training part only (normalization included) and, like
the model, give each point the mean score of the windows that cover it.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from model.normalize import Normalizer
from model.scoring import window_starts

MAX_FIT_WINDOWS = 2000
BATCH = 4096


def _windows(values: np.ndarray, window: int, starts: np.ndarray) -> np.ndarray:
    """Flattened windows at ``starts``: (len(starts), window * D)."""
    index = starts[:, None] + np.arange(window)  # (N, T)
    return values[index].reshape(len(starts), -1)


def _point_scores(values: np.ndarray, window: int, score_windows) -> np.ndarray:
    """Per-point mean of the window scores that cover each point (all windows, stride 1)."""
    n = len(values)
    sums, counts = np.zeros(n), np.zeros(n)
    starts = window_starts(n, window, 1)
    for i in range(0, len(starts), BATCH):
        batch = starts[i : i + BATCH]
        scores = score_windows(_windows(values, window, batch))  # (B,)
        index = (batch[:, None] + np.arange(window)).ravel()
        np.add.at(sums, index, np.repeat(scores, window))
        np.add.at(counts, index, 1.0)
    return sums / counts


def _fit_windows(train: np.ndarray, window: int, seed: int) -> np.ndarray:
    starts = window_starts(len(train), window, 1)
    if len(starts) > MAX_FIT_WINDOWS:
        starts = np.sort(np.random.default_rng(seed).choice(starts, MAX_FIT_WINDOWS, replace=False))
    return _windows(train, window, starts)


def baseline_scores(
    train: np.ndarray, values: np.ndarray, window: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per-point scores of every baseline: train (n_train, D) -> values (n, D)."""
    normalizer = Normalizer.fit(train)
    fit = _fit_windows(normalizer.transform(train).astype(np.float64), window, seed)
    series = normalizer.transform(values).astype(np.float64)
    pca = PCA(n_components=0.95, svd_solver="full", random_state=seed).fit(fit)

    def pca_error(x: np.ndarray) -> np.ndarray:
        return ((x - pca.inverse_transform(pca.transform(x))) ** 2).sum(axis=1)

    neighbours = NearestNeighbors(n_neighbors=min(5, len(fit))).fit(fit)

    def knn_distance(x: np.ndarray) -> np.ndarray:
        return neighbours.kneighbors(x)[0].mean(axis=1)

    return {
        "pca": _point_scores(series, window, pca_error),
        "knn": _point_scores(series, window, knn_distance),
    }
