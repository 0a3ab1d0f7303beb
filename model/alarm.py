"""The alarm decision: which score meets the threshold, the severity and the flags.

The ranking score ``score`` is the smoothed one (per-step results averaged over
``ModelConfig.smoothing`` steps): smoothing removes step-to-step noise and ranks
anomalies far better (docs/quality.md), but it also flattens a spike of a step or
two. The threshold is therefore fitted on the *unsmoothed* step scores of the
validation data, and a point is flagged when

    alarm_score = max(unsmoothed score, smoothed score) > threshold

so a short spike is flagged by its unsmoothed score and a long, moderate rise by
its smoothed one. Both are in nats on the same scale (the smoothed score is the
moving average of the unsmoothed one). Severity is the threshold's calibrated
severity of ``alarm_score``. Without smoothing both scores are the same.

Models saved before the alarm score existed, with smoothing on, had their
threshold fitted on smoothed validation scores; for them ``alarm_score`` is the
smoothed score, as it was when they were trained (see ``threshold_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from model.scoring import SeriesScores, contributions, top_variables
from model.threshold import Threshold

UNSMOOTHED = "unsmoothed"  # metadata["threshold_scores"] of every model trained now
SMOOTHED = "smoothed"  # older models trained with smoothing on


@dataclass(frozen=True)
class Scored:
    """Scores of one series (or window) in the model's terms, plus the alarm decision."""

    score: np.ndarray  # (n,) ranking score, smoothed; higher = more anomalous, nats
    alarm_score: np.ndarray  # (n,) max(unsmoothed, smoothed score): what meets the threshold
    log_prob: np.ndarray  # (n, D) reconstruction log-probability per variable, nats (smoothed)
    kl: np.ndarray  # (n,) KL divergence of the covering windows, nats (smoothed)
    warm_up: np.ndarray  # (n,) fewer than T points of history
    severity: np.ndarray  # (n,) in [0, 1], 1 - estimated tail probability of alarm_score
    is_anomaly: np.ndarray  # (n,) alarm_score > threshold (warm-up too: the flag only informs)
    contributions: np.ndarray  # (n, D) each variable's share of the step's excess surprise
    threshold: float

    def top(self, k: int) -> np.ndarray:
        return top_variables(self.contributions, k)

    @classmethod
    def stack(cls, parts: list[Scored]) -> Scored:
        """Results of equal length (arrays (n[, D])) as one batch (arrays (N, n[, D]))."""
        arrays = {
            f.name: np.stack([getattr(part, f.name) for part in parts])
            for f in fields(cls)
            if f.name != "threshold"
        }
        return cls(**arrays, threshold=parts[0].threshold)

    def pick(self, key: int | slice | None) -> Scored:
        """Index every array along its first axis: one window of a batch, or a tail
        (``None``, i.e. ``np.newaxis``, makes a batch of one)."""
        arrays = {f.name: getattr(self, f.name)[key] for f in fields(self) if f.name != "threshold"}
        return Scored(**arrays, threshold=self.threshold)


def threshold_scores(stored_config: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Which step scores a saved model's threshold was fitted on.

    Recorded in the metadata since the alarm score exists. Before, the threshold
    was fitted on the scores as smoothed by the model's config; a config without
    ``smooth_window`` predates smoothing, and ``smooth_window == 1`` is no smoothing.
    """
    if "threshold_scores" in metadata:
        return str(metadata["threshold_scores"])
    if stored_config.get("smooth_window", 1) == 1:
        return UNSMOOTHED
    return SMOOTHED


def decide(
    raw: SeriesScores,
    smoothed: SeriesScores,
    threshold: Threshold,
    baseline: np.ndarray,
    fitted_on: str = UNSMOOTHED,
) -> Scored:
    """Alarm score, severity, flags and attribution from unsmoothed and smoothed results."""
    alarm = smoothed.score if fitted_on == SMOOTHED else np.maximum(raw.score, smoothed.score)
    # NaN: causal warm-up, in both scores alike; +inf (a value far beyond float32's
    # range, log p = -inf) is the most anomalous score there is, and is flagged
    scored = ~np.isnan(alarm)
    severity = np.where(scored, threshold.severity(np.nan_to_num(alarm)), np.nan)
    is_anomaly = scored & (np.nan_to_num(alarm) > threshold.value)
    return Scored(
        smoothed.score,
        alarm,
        smoothed.log_prob,
        smoothed.kl,
        smoothed.warm_up,
        severity,
        is_anomaly,
        contributions(smoothed.log_prob, baseline),
        threshold.value,
    )
