"""Benchmark harness: the TSB-AD protocol on any directory of TSB-AD-format files.

For every ``NNN_<Dataset>_id_K_<Domain>_tr_<T>_1st_<F>.csv`` file: train on the
first T rows with one fixed configuration, score every row, write the per-row
results to ``<out>/<file>.csv`` (columns ``score``, ``alarm_score``,
``is_anomaly``), and compute VUS-PR, AUC-PR and AUC-ROC of ``score`` with TSB-AD's
own metric code. The flags are measured on the rows after the training part
(``model/alarm_quality.py``: normal points flagged, point F1 against the best F1 of
the same alarm score, event recall, false alerts per 10,000 normal points, alert
recall). When the directory holds ``published_vus_pr.csv``, the published methods
are printed alongside.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model.config import ModelConfig
from model.data import prepare_frame, read_frame
from model.detector import Detector
from model.errors import DataError
from model.evaluation.alarm_quality import flag_quality, flags_line, summarize
from model.evaluation.baselines import baseline_scores
from model.evaluation.metrics import detection_metrics, sliding_window_for
from model.stream import StreamState

FILE_PATTERN = re.compile(r"^\d+_(?P<dataset>[^_]+)_id_\d+_.*_tr_(?P<train>\d+)_1st_\d+\.csv$")
LABEL_COLUMN = "Label"
CHUNK = 256  # rows per request when the rows after the training part are streamed
BASELINES = ("pca", "knn")
COMPARED = ("OmniAnomaly", "USAD", "LSTMAD", "AutoEncoder", "CNN", "Donut", "PCA", "KMeansAD")


@dataclass
class FileResult:
    file: str
    dataset: str
    rows: int
    train_rows: int
    vus_pr: float
    auc_pr: float
    auc_roc: float
    train_seconds: float
    score_seconds: float
    flags: dict[
        str, float
    ]  # model.evaluation.alarm_quality.flag_quality of the rows after training
    baselines: dict[str, float] = field(default_factory=dict)  # our simple references: VUS-PR
    published: dict[str, float] = field(default_factory=dict)


def tsbad_files(directory: str | Path, contains: str | None = None) -> list[Path]:
    paths = sorted(p for p in Path(directory).glob("*.csv") if FILE_PATTERN.match(p.name))
    if contains:
        paths = [p for p in paths if contains in p.name]
    if not paths:
        raise DataError(
            f"no TSB-AD-format files (NNN_<Dataset>_id_K_..._tr_T_1st_F.csv) in {directory}"
        )
    return paths


def stream_in_chunks(
    detector: Detector, values: np.ndarray, start: int, chunk: int, causal: bool = False
) -> tuple[dict[str, np.ndarray], StreamState]:
    """Rows ``start:`` of ``values`` scored as a service sees a stream: in chunks of
    ``chunk`` rows, in order, each with the rows before it that one long series would
    give it as context (``Detector.context_points``), the flags decided by the model's
    stream state carried from chunk to chunk. Returns the alarm columns of those rows
    and the state after the last."""
    state = detector.stream_state(causal)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in STREAM_COLUMNS}
    reach = detector.context_points(causal)
    for begin in range(start, len(values), chunk):
        context = values[max(begin - reach, 0) : begin]
        scored, state = detector.score_stream(values[begin : begin + chunk], state, context)
        for name in STREAM_COLUMNS:
            parts[name].append(getattr(scored, name))
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}, state


STREAM_COLUMNS = ("alarm_score", "is_anomaly", "severity", "limit")


def stream_quality(
    detector: Detector,
    values: np.ndarray,
    labels: np.ndarray,
    start: int,
    chunk: int,
    ranking: np.ndarray,
    causal: bool = False,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``stream_in_chunks``, and the flag quality of those rows (``flag_quality``, the
    best F1 also of ``ranking``, the ranking score of the same rows) with the stream's
    regime changes and whether it ends drifting."""
    stream, state = stream_in_chunks(detector, values, start, chunk, causal)
    quality = flag_quality(
        stream["alarm_score"],
        stream["is_anomaly"],
        labels[start:],
        reach=detector.window,
        max_gap=detector.window // 2,
        severity=stream["severity"],
        ranking=ranking,
    )
    return {**quality, "rebaselines": state.rebaselines, "drifting": float(state.drifting)}, stream


def evaluate_file(path: Path, config: ModelConfig, out_dir: Path, chunk: int) -> FileResult:
    match = FILE_PATTERN.match(path.name)
    assert match is not None  # tsbad_files only yields matching names
    frame = read_frame(path)
    labels = frame[LABEL_COLUMN].to_numpy().astype(int)
    values = prepare_frame(frame, ignore_columns=[LABEL_COLUMN]).values
    n_train = int(match["train"])
    started = time.perf_counter()
    detector = Detector.fit(values[:n_train], config)
    trained = time.perf_counter()
    score = detector.score(values).score  # the ranking: every row in one series
    quality, stream = stream_quality(detector, values, labels, n_train, chunk, score[n_train:])
    scored = time.perf_counter()
    write_rows(out_dir / path.name, score, stream, n_train)
    window = sliding_window_for(values[:, 0])
    metrics = detection_metrics(score, labels, window)
    references = baseline_scores(values[:n_train], values, config.window, config.seed)
    return FileResult(
        path.name,
        match["dataset"],
        len(score),
        n_train,
        metrics["VUS-PR"],
        metrics["AUC-PR"],
        metrics["AUC-ROC"],
        trained - started,
        scored - trained,
        quality,
        {name: detection_metrics(s, labels, window)["VUS-PR"] for name, s in references.items()},
    )


def write_rows(path: Path, score: np.ndarray, stream: dict[str, np.ndarray], start: int) -> None:
    """Per row: the ranking score, and from row ``start`` on the stream's alarm columns."""
    columns = {"score": score}
    for name, part in stream.items():
        column = np.full(len(score), 0 if name == "is_anomaly" else np.nan)
        column[start:] = part
        columns[name] = column.astype(int) if name == "is_anomaly" else column
    pd.DataFrame(columns).to_csv(path, index=False)


def published_scores(directory: Path) -> pd.DataFrame | None:
    path = directory / "published_vus_pr.csv"
    return pd.read_csv(path).set_index("file") if path.is_file() else None


def results_frame(results: list[FileResult]) -> pd.DataFrame:
    rows = [{**asdict(r), **r.flags, **r.baselines, **r.published} for r in results]
    return pd.DataFrame(rows).drop(columns=["flags", "baselines", "published"])


RANKING = ["vus_pr", "auc_pr", "auc_roc"]
FLAGS = ["normal_flagged", "point_f1", "best_f1", "f1_ratio", "event_recall"]
ALERTS = ["false_alerts", "alert_recall", "alerts", "events"]
STREAM = ["severity_99", "severity_999", "rebaselines", "drifting"]


def summary_tables(frame: pd.DataFrame, methods: list[str]) -> dict[str, pd.DataFrame]:
    """Ranking per data set (means: ours, our baselines, the published methods), flags
    and alerts per data set (``alarm_quality.summarize``), and the per-file table."""
    others = [*BASELINES, *methods]
    ranking = frame.groupby("dataset")[[*RANKING, *others]].mean().reset_index()
    ranking.insert(1, "files", frame.groupby("dataset").size().to_numpy())
    timing = ["train_seconds", "score_seconds"]
    return {
        "Ranking: mean VUS-PR per data set (ours: also AUC-PR, AUC-ROC)": ranking,
        "Flags and alerts per data set (after the training part)": summarize(frame, "dataset"),
        "Per file": frame[["file", *RANKING, *FLAGS, *ALERTS, *STREAM, *timing, *others]],
    }


def print_tables(tables: dict[str, pd.DataFrame]) -> None:
    for title, table in reversed(tables.items()):  # the summaries last, nearest the prompt
        print(f"\n{title}:")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def write_tables(tables: dict[str, pd.DataFrame], path: Path) -> None:
    path.write_text("\n".join(f"### {t}\n\n{markdown_table(f)}" for t, f in tables.items()))


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (floats to 3 decimals)."""
    cells = [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def run_evaluation(
    directory: str | Path,
    out: str | Path,
    config: ModelConfig | None = None,
    files: str | None = None,
    chunk: int = CHUNK,
) -> pd.DataFrame:
    """Evaluate every TSB-AD file in ``directory``; returns the per-file table."""
    directory, out_dir = Path(directory), Path(out)
    config = config or ModelConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    published = published_scores(directory)
    methods = [m for m in COMPARED if published is not None and m in published.columns]
    results = []
    for path in tsbad_files(directory, files):
        torch.manual_seed(config.seed)
        result = evaluate_file(path, config, out_dir, chunk)
        if published is not None and path.name in published.index:
            result.published = {m: float(published.at[path.name, m]) for m in methods}
        results.append(result)
        print(
            f"{path.name}: VUS-PR {result.vus_pr:.3f}  AUC-PR {result.auc_pr:.3f}  "
            f"AUC-ROC {result.auc_roc:.3f}  {flags_line(result.flags)}  "
            f"(train {result.train_seconds:.1f} s, score {result.score_seconds:.1f} s)",
            flush=True,
        )
    frame = results_frame(results)
    tables = summary_tables(frame, methods)
    print_tables(tables)
    frame.to_csv(out_dir / "summary.csv", index=False)
    write_tables(tables, out_dir / "summary.md")
    total = frame[["train_seconds", "score_seconds"]].to_numpy().sum()
    print(
        f"\n{len(results)} files in {total:.0f} s of training and scoring; "
        f"scores in {out_dir}/, table in {out_dir}/summary.csv"
    )
    return frame
