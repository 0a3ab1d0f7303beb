"""Scoring by reconstruction probability and KL divergence.

For a window x (T, D) the encoder gives q(z|x) = N(mu, sigma^2). With L fixed
standard-normal draws eps_l (seeded once per model, identical for every
window, so a window's score never depends on what it is batched with):

    z_l = mu + sigma * eps_l
    log_prob[t, d] = 1/L * sum_l log N(x[t, d]; mean_l[t, d], std_l[t, d]^2)   (nats)
    kl = KL(q(z|x) || N(0, I))                                                  (nats per window)

The anomaly score of time step t (higher = more anomalous) is the negative
reconstruction log-probability of that step plus the window's KL spread evenly
over its T steps:

    score[t] = -sum_d log_prob[t, d] + kl / T

so the scores of a window's steps add up to its negative ELBO estimate. A long
series is cut into sliding windows; each point's log_prob and KL are the means
over the windows that cover it, and its score is formed from those means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from model.engine import Engine
from model.errors import DataError

BATCH_SIZE = 256
# the ranking score averages the step score over these multiples of the smoothing width
# (``multiscale_average``): one width ranks either short or long anomalies well, not both
# (docs/quality.md)
RANKING_SCALES = (0.5, 1.0, 2.0)


def step_scores(log_prob: np.ndarray, kl: np.ndarray, window: int) -> np.ndarray:
    """Per-step anomaly score from log_prob (..., D) and kl (...): see module docstring."""
    return -log_prob.sum(axis=-1) + kl / window


def window_starts(n: int, window: int, stride: int) -> np.ndarray:
    """Start of every window; the last window always ends at the last point."""
    if n < window:
        raise DataError(
            f"the series has {n} points; the model needs at least {window} (its window)"
        )
    starts = np.arange(0, n - window + 1, stride)
    if starts[-1] != n - window:
        starts = np.append(starts, n - window)
    return starts


def _batches(starts: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(starts), batch_size):
        yield starts[i : i + batch_size]


def add_windows(total: np.ndarray, starts: np.ndarray, per_step: np.ndarray) -> None:
    """Add step k of every window to ``total[start + k]``: per_step (B or 1, T, ...).

    The starts are distinct, so no index repeats within one assignment (a per-step
    loop is much faster than np.add.at over all B x T indices).
    """
    for k in range(per_step.shape[1]):
        total[starts + k] += per_step[:, k]


@dataclass(frozen=True)
class SeriesScores:
    log_prob: np.ndarray  # (n, D) mean over covering windows, nats
    kl: np.ndarray  # (n,) mean KL of the covering windows, nats
    score: np.ndarray  # (n,) anomaly score, higher = more anomalous
    warm_up: np.ndarray  # (n,) True for the first T-1 points (seen by fewer windows / no history)

    def pick(self, key: slice) -> SeriesScores:
        """The same results for the points ``key`` selects."""
        return SeriesScores(self.log_prob[key], self.kl[key], self.score[key], self.warm_up[key])


def score_series(
    engine: Engine, values: np.ndarray, stride: int = 1, batch_size: int = BATCH_SIZE
) -> SeriesScores:
    """Score a normalized series (n, D) with overlapping windows, streaming in batches."""
    window = engine.window
    n, d = values.shape
    series = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32))
    lp_sum = np.zeros((n, d))
    kl_sum = np.zeros(n)
    count = np.zeros(n)
    for starts in _batches(window_starts(n, window, stride), batch_size):
        windows = series[torch.from_numpy(starts[:, None] + np.arange(window))]  # (B, T, D)
        log_prob, kl = engine(windows)  # (B, T, D), (B,)
        add_windows(lp_sum, starts, log_prob.numpy())
        add_windows(kl_sum, starts, np.broadcast_to(kl.numpy()[:, None], (len(starts), window)))
        add_windows(count, starts, np.ones((1, window)))
    log_prob, kl = lp_sum / count[:, None], kl_sum / count
    warm_up = np.arange(n) < window - 1
    return SeriesScores(log_prob, kl, step_scores(log_prob, kl, window), warm_up)


def score_window_batch(
    engine: Engine, windows: torch.Tensor, batch_size: int = BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Independent windows (N, T, D) -> log_prob (N, T, D), kl (N,), in batches."""
    parts = [engine(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
    return (
        np.concatenate([p[0].numpy() for p in parts]).astype(np.float64),
        np.concatenate([p[1].numpy() for p in parts]).astype(np.float64),
    )


def score_last_points(
    engine: Engine, values: np.ndarray, batch_size: int = BATCH_SIZE
) -> SeriesScores:
    """Causal scoring: each point t >= T-1 gets the last step of the window ending at t.

    Uses only data up to t, as a streaming caller sees it. The first T-1 points
    have no full window: their scores are NaN and they are flagged warm-up.
    """
    window = engine.window
    n, d = values.shape
    series = torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32))
    log_prob = np.full((n, d), np.nan)
    kl = np.full(n, np.nan)
    for starts in _batches(window_starts(n, window, 1), batch_size):
        index = starts[:, None] + np.arange(window)
        lp, k = engine(series[torch.from_numpy(index)])
        log_prob[starts + window - 1] = lp[:, -1].numpy()
        kl[starts + window - 1] = k.numpy()
    warm_up = np.arange(n) < window - 1
    return SeriesScores(log_prob, kl, step_scores(log_prob, kl, window), warm_up)


def points_before(width: int, causal: bool) -> int:
    """How far back a ``moving_average`` over ``width`` steps reaches from its point."""
    return width - 1 if causal else width // 2


def ranking_reach(width: int, causal: bool) -> int:
    """How far back ``multiscale_average`` over ``width`` reaches: its widest average's
    (0 for ``width`` <= 1, no averaging)."""
    if width <= 1:
        return 0
    return points_before(ranking_width(width), causal)


def ranking_width(width: int) -> int:
    """Steps of ``multiscale_average``'s widest average over ``width`` (1: no averaging):
    the ranking scores of two points this far apart or more share no step."""
    return int(max(RANKING_SCALES) * width) if width > 1 else 1


def delayed(values: np.ndarray, lag: int) -> np.ndarray:
    """``values`` (n,) ``lag`` >= 1 points later: point k gets ``values[k - lag]``, NaN
    before (a statistic of the window ending at k - lag, as a past reference of k)."""
    return np.concatenate([np.full(lag, np.nan), values])[: len(values)]


def moving_average(values: np.ndarray, width: int, causal: bool, axis: int = 0) -> np.ndarray:
    """Mean over ``width`` steps along ``axis``: centred, or trailing when ``causal``.

    Ends are padded with the edge value; NaN (causal warm-up) is skipped. An infinite
    value makes the means of the windows that hold it infinite, and no others (a
    running sum through it would leave every later mean NaN).
    """
    if width <= 1:
        return values
    values = np.moveaxis(values, axis, 0)
    before = points_before(width, causal)
    pad = [(before, width - 1 - before)] + [(0, 0)] * (values.ndim - 1)
    padded = np.pad(values, pad, mode="edge")

    def window_sums(x: np.ndarray) -> np.ndarray:
        sums = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])
        return sums[width:] - sums[:-width]

    finite, valid = np.isfinite(padded), ~np.isnan(padded)
    sums = window_sums(np.where(finite, padded, 0.0))
    counts = window_sums(valid.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
        if not np.array_equal(finite, valid):  # an infinity: +inf and -inf together, NaN
            for sign in (1.0, -1.0):
                held = window_sums((padded == sign * np.inf).astype(float)) > 0
                mean = np.where(held, mean + sign * np.inf, mean)
    return np.moveaxis(np.where(np.isnan(values), np.nan, mean), 0, axis)


def multiscale_average(values: np.ndarray, width: int, causal: bool, axis: int = 0) -> np.ndarray:
    """The mean of the moving averages (``moving_average``) over ``RANKING_SCALES`` x
    ``width`` steps: a kernel that peaks at the point and reaches 2 ``width`` steps, so
    a spike and a long, moderate rise both rank high. ``width`` <= 1: ``values``."""
    if width <= 1:
        return values
    widths = [max(1, int(scale * width)) for scale in RANKING_SCALES]  # rounded down
    return sum(moving_average(values, w, causal, axis) for w in widths) / len(widths)


def smooth(raw: SeriesScores, width: int, window: int, causal: bool, axis: int = 0) -> SeriesScores:
    """Average log_prob and kl over ``width`` steps; the score is formed from the averages."""
    if width <= 1:
        return raw
    log_prob = moving_average(raw.log_prob, width, causal, axis)
    kl = moving_average(raw.kl, width, causal, axis)
    return SeriesScores(log_prob, kl, step_scores(log_prob, kl, window), raw.warm_up)


def contributions(log_prob: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Each variable's share of a step's excess surprise: (n, D) -> (n, D), rows sum to 1 or 0.

    A variable's excess is how far its negative log-probability rises above its
    typical value on normal data (``baseline``, the per-variable median on the
    validation split), clipped at 0.
    """
    excess = np.clip(-log_prob - baseline, 0.0, None)
    infinite = np.isposinf(excess)  # log p = -inf: those variables share the whole step
    excess = np.where(infinite.any(axis=-1, keepdims=True), infinite.astype(float), excess)
    total = excess.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, excess / total, 0.0)
    return np.nan_to_num(shares)


def top_variables(shares: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest shares per row, largest first: (n, D) -> (n, k)."""
    k = min(k, shares.shape[-1])
    return np.argsort(-shares, axis=-1, kind="stable")[..., :k]
