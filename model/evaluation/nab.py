"""NAB under the causal protocol: train on each file's probationary 15%, score every row
with the window ending there (what a streaming caller gets), compare with the
published NAB detectors' per-row scores by the same VUS-PR."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from model.config import ModelConfig
from model.data import prepare_frame, read_frame
from model.detector import Detector
from model.errors import DataError
from model.evaluation.metrics import detection_metrics, sliding_window_for

PROBATION = 0.15
DETECTORS = {
    "randomCutForest": "Random Cut Forest",
    "numenta": "HTM",
    "windowedGaussian": "windowed Gaussian",
    "knncad": "KNN-CAD",
    "contextOSE": "CAD OSE",
    "ARTime": "ARTime",
}


def nab_labels(frame: pd.DataFrame, windows: list[list[str]]) -> np.ndarray:
    """1 for rows whose timestamp lies inside a labelled window (inclusive)."""
    stamps = pd.to_datetime(frame["timestamp"])
    labels = np.zeros(len(frame), dtype=int)
    for start, end in windows:
        labels[((stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(end))).to_numpy()] = 1
    return labels


def causal_scores(values: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Train on the probationary part, score each row by the window ending there."""
    n_train = int(len(values) * PROBATION)
    detector = Detector.fit(values[:n_train], config)
    score = detector.score(values, causal=True).score
    # rows before the first full window have no score: give them the lowest one
    return np.where(np.isnan(score), np.nanmin(score), score)


def evaluate_nab(nab_dir: str | Path, out: str | Path, config: ModelConfig) -> pd.DataFrame:
    nab_dir, out = Path(nab_dir), Path(out)
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    labelled = sorted(name for name, spans in windows.items() if spans)
    if not labelled:
        raise DataError(f"no labelled anomaly windows in {nab_dir}/labels/combined_windows.json")
    rows = []
    for name in labelled:
        started = time.perf_counter()
        frame = read_frame(nab_dir / "data" / name)
        # values only: NAB has a duplicated hour at a daylight-saving change
        values = prepare_frame(frame, ignore_columns=["timestamp"]).values  # (n, 1)
        labels = nab_labels(frame, windows[name])
        score = causal_scores(values, config)
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"score": score}).to_csv(target, index=False)
        window = sliding_window_for(values[:, 0])
        row = {
            "file": name,
            "lvad": detection_metrics(score, labels, window)["VUS-PR"],
            "seconds": time.perf_counter() - started,
        }
        for key, label in DETECTORS.items():
            published = nab_dir / "results" / key / name
            if published.is_file():
                theirs = pd.read_csv(published)["anomaly_score"].to_numpy(dtype=float)
                row[label] = detection_metrics(np.nan_to_num(theirs), labels, window)["VUS-PR"]
        rows.append(row)
        print(f"{name}: VUS-PR {row['lvad']:.3f} ({row['seconds']:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    print("\nNAB, causal, mean VUS-PR over", len(table), "files:")
    print(table.drop(columns=["file", "seconds"]).mean().to_string(float_format="%.3f"))
    table.to_csv(out / "summary.csv", index=False)
    return table
