"""What the CLI prints and writes: training progress, score tables, summaries."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd

from model.data import Table
from model.detector import Detector, Scored
from model.events import find_events
from model.scoring import top_variables
from model.train import EpochReport


class EpochPrinter:
    """Progress of training: a bar in a terminal, one plain line per epoch otherwise."""

    def __init__(self, epochs: int, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=epochs, desc="training", unit="epoch", file=self.stream)

    def __enter__(self) -> EpochPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, report: EpochReport) -> None:
        losses = {
            "train": f"{report.train_loss:.2f}",
            "val": f"{report.val_loss:.2f}",
            "kl": f"{report.train_kl:.2f}",
        }
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(losses)
        else:
            text = " ".join(f"{k} {v}" for k, v in losses.items())
            print(
                f"epoch {report.epoch}/{report.epochs} {text} ({report.seconds:.1f} s)",
                file=self.stream,
                flush=True,
            )


def shares_text(names: list[str], shares: np.ndarray, k: int) -> list[str]:
    """'name:share name:share' of the k largest shares of every row of (n, D) shares."""
    return [
        " ".join(f"{names[i]}:{row[i]:.2f}" for i in order if row[i] > 0)
        for row, order in zip(shares, top_variables(shares, k), strict=True)
    ]


def top_text(detector: Detector, scored: Scored, k: int) -> list[str]:
    """The top variables of every point (empty where nothing stands out)."""
    return shares_text(detector.feature_names, scored.contributions, k)


def scores_frame(
    detector: Detector, table: Table, scored: Scored, with_contributions: bool = False
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "score": scored.score,
            "alarm_score": scored.alarm_score,
            "threshold": scored.threshold,
            "is_anomaly": scored.is_anomaly.astype(int),
            "severity": scored.severity,
            "warm_up": scored.warm_up.astype(int),
            "log_prob": scored.log_prob.sum(axis=1),
            "kl": scored.kl,
            "top_variables": top_text(detector, scored, detector.config.top_k),
        }
    )
    if table.timestamps is not None:
        frame.insert(0, "timestamp", table.timestamps)
    if with_contributions:
        for i, name in enumerate(detector.feature_names):
            frame[f"contribution_{name}"] = scored.contributions[:, i]
    return frame


def print_score_summary(
    detector: Detector, table: Table, scored: Scored, labels: np.ndarray | None = None
) -> None:
    n = len(scored.score)
    flagged = int(scored.is_anomaly.sum())
    events = detector.events(scored)
    print(
        f"scored {n} points ({int(scored.warm_up.sum())} warm-up) with threshold "
        f"{scored.threshold:.3f}: {flagged} anomalous points in {len(events)} events"
    )
    shown = events[:20]
    shares = np.array([event.contributions for event in shown]).reshape(-1, detector.n_features)
    tops = shares_text(detector.feature_names, shares, detector.config.top_k)
    stamps = table.timestamps
    for event, top in zip(shown, tops, strict=True):
        when = pd.Timestamp(stamps[event.start]) if stamps is not None else ""
        print(
            f"  {when}  rows {event.start}-{event.end - 1}  peak alarm score "
            f"{scored.alarm_score[event.peak]:.1f} severity {scored.severity[event.peak]:.4f}"
            f"  top: {top}"
        )
    if len(events) > 20:
        print(f"  ... {len(events) - 20} more")
    if labels is not None:
        print_label_agreement(scored, np.asarray(labels).astype(bool), detector.window)


def print_label_agreement(scored: Scored, labels: np.ndarray, window: int) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    score = np.nan_to_num(scored.score, nan=np.nanmin(scored.score))
    truth = find_events(labels)
    found = sum(
        bool(scored.is_anomaly[max(0, s - window // 2) : e + window // 2].any()) for s, e in truth
    )
    print(
        f"against labels: {found}/{len(truth)} labelled events flagged; "
        f"point-wise precision {precision(scored.is_anomaly, labels):.2f}"
    )
    if labels.any() and not labels.all():
        print(
            f"  AUC-PR {average_precision_score(labels, score):.3f}  "
            f"AUC-ROC {roc_auc_score(labels, score):.3f}"
        )


def precision(flags: np.ndarray, labels: np.ndarray) -> float:
    return float(labels[flags].mean()) if flags.any() else float("nan")
