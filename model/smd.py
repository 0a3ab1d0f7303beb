"""SMD standard protocol: train on ``train/<machine>.npy``, score ``test/<machine>.npy``.

Reports point-wise best F1 and AUC-PR (no point adjustment), and the
attribution quality against ``interpretation_label/<machine>.txt`` as
HitRate@P% (OmniAnomaly / InterFusion): for each labelled anomalous point with
ground-truth columns G, take the floor(P% x |G|) variables with the largest
contributions; hit rate = |top ∩ G| / |G|, averaged over those points.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

from model.config import ModelConfig
from model.detector import Detector
from model.errors import DataError


def read_interpretation(path: Path) -> list[tuple[int, int, list[int]]]:
    """Lines ``start-end:c1,c2`` -> (start, end inclusive, 0-based columns)."""
    segments = []
    for line in path.read_text().split():
        span, _, columns = line.partition(":")
        start, _, end = span.partition("-")
        segments.append((int(start), int(end), [int(c) - 1 for c in columns.split(",") if c]))
    return segments


def hit_rate(contributions: np.ndarray, segments: list, percent: float) -> float:
    """Mean over labelled points of |top floor(P|G|) ∩ G| / |G|."""
    order = np.argsort(-contributions, axis=1, kind="stable")  # (n, D)
    rates = []
    for start, end, truth in segments:
        k = int(np.floor(percent / 100 * len(truth)))
        for t in range(start, min(end, len(order) - 1) + 1):
            rates.append(len(set(order[t, :k].tolist()) & set(truth)) / len(truth))
    return float(np.mean(rates))


def best_f1(score: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, score)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return float(f1.max())


def evaluate_smd(smd_dir: str | Path, out: str | Path, config: ModelConfig) -> pd.DataFrame:
    smd_dir, out = Path(smd_dir), Path(out)
    machines = sorted(p.stem for p in (smd_dir / "train").glob("*.npy"))
    if not machines:
        raise DataError(f"no train/<machine>.npy files in {smd_dir}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for machine in machines:
        started = time.perf_counter()
        train = np.load(smd_dir / "train" / f"{machine}.npy").astype(np.float64)
        test = np.load(smd_dir / "test" / f"{machine}.npy").astype(np.float64)
        labels = np.load(smd_dir / "labels" / f"{machine}.npy").astype(int)
        scored = Detector.fit(train, config).score(test)
        segments = read_interpretation(smd_dir / "interpretation_label" / f"{machine}.txt")
        pd.DataFrame({"score": scored.score}).to_csv(out / f"{machine}.csv", index=False)
        rows.append(
            {
                "machine": machine,
                "best_f1": best_f1(scored.score, labels),
                "auc_pr": float(average_precision_score(labels, scored.score)),
                "hitrate@100": hit_rate(scored.contributions, segments, 100),
                "hitrate@150": hit_rate(scored.contributions, segments, 150),
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else str(v) for k, v in rows[-1].items()
            ),
            flush=True,
        )
    table = pd.DataFrame(rows)
    print("\nSMD standard protocol, mean over machines (point-wise, no point adjustment):")
    print(table.drop(columns=["machine"]).mean().to_string(float_format="%.3f"))
    table.to_csv(out / "smd-summary.csv", index=False)
    return table
