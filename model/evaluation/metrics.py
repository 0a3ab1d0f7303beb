"""Detection-quality metrics for the evaluation harness, computed by TSB-AD's own code.

``detection_metrics`` returns the threshold-independent metrics of TSB-AD's
``get_metrics`` (AUC-ROC, AUC-PR, and the range-based VUS-ROC / VUS-PR with
``version="opt"``, ``thre=250``) without its threshold-dependent F1 variants,
which are slow on long series. All four are rank-based, so any monotone
rescaling of the score gives the same values.

``sliding_window_for`` picks the VUS buffer length as TSB-AD's benchmark does:
the dominant period of the first variable from its autocorrelation
(``find_length_rank(..., rank=1)``; 125 when no period between 3 and 300 is found).

TSB-AD is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.errors import DataError

_INSTALL_HINT = "detection metrics need TSB-AD; install it with: pip install --no-deps tsb-ad==1.5"
_VUS_VERSION = "opt"  # as in TSB_AD.evaluation.metrics.get_metrics
_VUS_THRESHOLDS = 250


def sliding_window_for(series: Any) -> int:
    """TSB-AD's period estimate for a series of shape (n,), or (n, d) using column 0."""
    try:
        from TSB_AD.utils.slidingWindows import find_length_rank
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc
    x = np.asarray(series, dtype=float)
    if x.ndim == 2:
        x = x[:, 0]  # (n,)
    if x.ndim != 1 or x.size < 2:
        raise DataError(f"need a series of shape (n,) or (n, d) with n >= 2, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("series contains NaN or infinite values")
    return int(find_length_rank(x, rank=1))


def detection_metrics(score: Any, label: Any, sliding_window: int) -> dict[str, float]:
    """{"VUS-PR", "VUS-ROC", "AUC-PR", "AUC-ROC"} of ``score`` (higher = more anomalous).

    ``label`` holds 0 (normal) / 1 (anomaly) per time step and must contain both.
    """
    try:
        from TSB_AD.evaluation.basic_metrics import basic_metricor, generate_curve
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc
    s, y = _validated(score, label, sliding_window)
    grader = basic_metricor()
    auc_roc = grader.metric_ROC(y, s)
    auc_pr = grader.metric_PR(y, s)
    *_, vus_roc, vus_pr = generate_curve(y, s, sliding_window, _VUS_VERSION, _VUS_THRESHOLDS)
    return {
        "VUS-PR": float(vus_pr),
        "VUS-ROC": float(vus_roc),
        "AUC-PR": float(auc_pr),
        "AUC-ROC": float(auc_roc),
    }


def _validated(score: Any, label: Any, sliding_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(score as float (n,), label as int (n,)), or DataError naming the problem."""
    s = np.asarray(score, dtype=float)
    y = np.asarray(label)
    if s.ndim != 1 or s.shape != y.shape or s.size == 0:
        raise DataError(f"score and label must be 1-D, equal, non-empty: {s.shape}, {y.shape}")
    if not np.all(np.isfinite(s)):
        raise DataError("score contains NaN or infinite values", field="score")
    if not np.all((y == 0) | (y == 1)):
        raise DataError("label must contain only 0 (normal) and 1 (anomaly)", field="label")
    y = y.astype(int)
    if y.min() == y.max():
        kind = "anomalies" if y[0] == 1 else "normal points"
        raise DataError(f"label is all {kind}: metrics need both classes", field="label")
    if isinstance(sliding_window, bool) or not isinstance(sliding_window, int | np.integer):
        raise DataError(f"sliding_window must be an int, got {sliding_window!r}")
    if sliding_window < 0:
        raise DataError(f"sliding_window must be >= 0, got {sliding_window}")
    return s, y
