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
from model.evaluation.alarm_quality import flags_line, summarize
from model.evaluation.evaluate import CHUNK, markdown_table, stream_quality
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


def causal_scores(
    values: np.ndarray, labels: np.ndarray, config: ModelConfig, chunk: int = CHUNK
) -> tuple[np.ndarray, dict[str, float]]:
    """Train on the probationary part, score each row by the window ending there: the
    ranking score of every row, and the flag quality of the rows after the training
    part, streamed in chunks with the model's causal stream state."""
    n_train = int(len(values) * PROBATION)
    detector = Detector.fit(values[:n_train], config)
    score = detector.score(values, causal=True).score
    # rows before the first full window have no score: give them the lowest one
    score = np.where(np.isnan(score), np.nanmin(score), score)
    rows = score[n_train:]
    return score, stream_quality(detector, values, labels, n_train, chunk, rows, causal=True)[0]


def evaluate_nab(
    nab_dir: str | Path, out: str | Path, config: ModelConfig, chunk: int = CHUNK
) -> pd.DataFrame:
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
        score, quality = causal_scores(values, labels, config, chunk)
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"score": score}).to_csv(target, index=False)
        window = sliding_window_for(values[:, 0])
        row = {
            "file": name,
            "lvad": detection_metrics(score, labels, window)["VUS-PR"],
            "seconds": time.perf_counter() - started,
            **quality,
        }
        for key, label in DETECTORS.items():
            published = nab_dir / "results" / key / name
            if published.is_file():
                theirs = pd.read_csv(published)["anomaly_score"].to_numpy(dtype=float)
                row[label] = detection_metrics(np.nan_to_num(theirs), labels, window)["VUS-PR"]
        rows.append(row)
        print(
            f"{name}: VUS-PR {row['lvad']:.3f}  {flags_line(quality)} ({row['seconds']:.1f} s)",
            flush=True,
        )
    table = pd.DataFrame(rows)
    ranking = table[["lvad", *(c for c in DETECTORS.values() if c in table)]].mean()
    flags = summarize(table, None)
    print("\nNAB, causal, mean VUS-PR over", len(table), "files:")
    print(ranking.to_string(float_format="%.3f"))
    print("\nNAB, causal, flags and alerts after the probationary part:")
    print(flags.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    # nab-summary.*, so that TSB-AD's summary.* (and SMD's smd-summary.csv) can share --out
    table.to_csv(out / "nab-summary.csv", index=False)
    (out / "nab-summary.md").write_text(
        "### NAB, causal: mean VUS-PR\n\n"
        + markdown_table(ranking.rename("VUS-PR").rename_axis("detector").reset_index())
        + "\n### NAB, causal: flags and alerts\n\n"
        + markdown_table(flags)
    )
    return table
