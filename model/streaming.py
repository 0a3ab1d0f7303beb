"""A threshold for streaming (causal) scoring.

A detector's stored threshold is fitted on the validation tail's *centred* scores:
each point's log-probability averaged over every window covering it
(``Detector.score`` by default). A streaming caller scores each point with only the
window ending there (``causal=True``), and a window's last step is reconstructed
worse than its middle: with the stored threshold, causal scores of normal data
cross it far more often than the risk level says (docs/pull.md has the measured
rates). ``causal_threshold`` fits the same peaks-over-threshold tail on the
unsmoothed causal step scores of normal data (the validation tail the training held
out, or any normal stretch), for comparing causal alarm scores against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model.scoring import score_last_points
from model.threshold import Threshold, fit_threshold

if TYPE_CHECKING:
    from model.detector import Detector


def causal_threshold(
    detector: Detector, normal: np.ndarray, risk: float | None = None
) -> Threshold:
    """Threshold on the causal step scores of ``normal`` (n, D), original units, n > T.

    ``risk`` defaults to the model's own. The first T-1 points only give context.
    """
    scores = score_last_points(detector.engine, detector.normalize(np.asarray(normal)))
    return fit_threshold(scores.score[detector.window - 1 :], risk=risk or detector.config.risk)


def validation_tail(values: np.ndarray, detector: Detector) -> np.ndarray:
    """The rows of the training ``values`` (n, D) that ``Detector.fit`` held out for
    validation, with a window of context before them."""
    n = len(values)
    start = n - max(int(round(n * detector.config.val_fraction)), detector.window)
    return values[max(0, start - detector.window + 1) :]
