"""Benchmark harness: the TSB-AD protocol on any directory of TSB-AD-format files.

For every ``NNN_<Dataset>_id_K_<Domain>_tr_<T>_1st_<F>.csv`` file: train on the
first T rows with one fixed configuration, score every row, write the per-row
results to ``<out>/<file>.csv`` (columns ``score``, ``alarm_score``,
``is_anomaly``), and compute VUS-PR, AUC-PR and AUC-ROC of ``score`` with TSB-AD's
own metric code. The alarm is summarized on the rows after the training part: the
share flagged and the point-wise precision of the flags. When the directory holds
``published_vus_pr.csv``, the published methods are printed alongside.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from model.config import ModelConfig
from model.data import prepare_frame, read_frame
from model.detector import Detector
from model.errors import DataError
from model.evaluation.baselines import baseline_scores
from model.evaluation.metrics import detection_metrics, sliding_window_for

FILE_PATTERN = re.compile(r"^\d+_(?P<dataset>[^_]+)_id_\d+_.*_tr_(?P<train>\d+)_1st_\d+\.csv$")
LABEL_COLUMN = "Label"
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
    flagged: float  # share of the rows after the training part whose alarm_score > threshold
    precision: float  # point-wise precision of those flags (NaN: none flagged)
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


def evaluate_file(path: Path, config: ModelConfig, out_dir: Path) -> FileResult:
    match = FILE_PATTERN.match(path.name)
    assert match is not None  # tsbad_files only yields matching names
    frame = read_frame(path)
    labels = frame[LABEL_COLUMN].to_numpy().astype(int)
    table = prepare_frame(frame, ignore_columns=[LABEL_COLUMN])
    n_train = int(match["train"])
    started = time.perf_counter()
    detector = Detector.fit(table.values[:n_train], config)
    trained = time.perf_counter()
    result = detector.score(table.values)
    scored = time.perf_counter()
    score, flags = result.score, result.is_anomaly
    columns = {"score": score, "alarm_score": result.alarm_score, "is_anomaly": flags.astype(int)}
    pd.DataFrame(columns).to_csv(out_dir / path.name, index=False)
    test_flags, test_labels = flags[n_train:], labels[n_train:].astype(bool)
    window = sliding_window_for(table.values[:, 0])
    metrics = detection_metrics(score, labels, window)
    references = baseline_scores(table.values[:n_train], table.values, config.window, config.seed)
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
        float(test_flags.mean()),
        float(test_labels[test_flags].mean()) if test_flags.any() else float("nan"),
        {name: detection_metrics(s, labels, window)["VUS-PR"] for name, s in references.items()},
    )


def published_scores(directory: Path) -> pd.DataFrame | None:
    path = directory / "published_vus_pr.csv"
    return pd.read_csv(path).set_index("file") if path.is_file() else None


def results_frame(results: list[FileResult]) -> pd.DataFrame:
    frame = pd.DataFrame([{**asdict(r), **r.baselines, **r.published} for r in results])
    return frame.drop(columns=["baselines", "published"])


def summary_tables(frame: pd.DataFrame, methods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(means per data set, per file): ours, our alarm, our baselines, then the published
    methods (precision means skip files with no flag)."""
    ours, alarms = ["vus_pr", "auc_pr", "auc_roc"], ["flagged", "precision"]
    timing, others = ["train_seconds", "score_seconds"], [*BASELINES, *methods]
    means = frame.groupby("dataset")[[*ours, *alarms, *others]].mean().reset_index()
    means.insert(1, "files", frame.groupby("dataset").size().to_numpy())
    return means, frame[["file", *ours, *alarms, *timing, *others]]


def print_tables(means: pd.DataFrame, per_file: pd.DataFrame) -> None:
    def fmt(v: float) -> str:
        return f"{v:.3f}"

    print("\nPer file (VUS-PR unless named; published methods from TSB-AD):")
    print(per_file.to_string(index=False, float_format=fmt))
    print(
        "\nMean per data set (ours: vus_pr, auc_pr, auc_roc; our baselines pca, knn and the "
        "published methods: VUS-PR):"
    )
    print(means.to_string(index=False, float_format=fmt))


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
        result = evaluate_file(path, config, out_dir)
        if published is not None and path.name in published.index:
            result.published = {m: float(published.at[path.name, m]) for m in methods}
        results.append(result)
        print(
            f"{path.name}: VUS-PR {result.vus_pr:.3f}  AUC-PR {result.auc_pr:.3f}  "
            f"AUC-ROC {result.auc_roc:.3f}  flagged {result.flagged:.2%} "
            f"(precision {result.precision:.2f})  (train {result.train_seconds:.1f} s, "
            f"score {result.score_seconds:.1f} s)",
            flush=True,
        )
    frame = results_frame(results)
    means, per_file = summary_tables(frame, methods)
    print_tables(means, per_file)
    frame.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(
        "### Mean per data set\n\n"
        + markdown_table(means)
        + "\n### Per file\n\n"
        + markdown_table(per_file)
    )
    total = frame[["train_seconds", "score_seconds"]].to_numpy().sum()
    print(
        f"\n{len(results)} files in {total:.0f} s of training and scoring; "
        f"scores in {out_dir}/, table in {out_dir}/summary.csv"
    )
    return frame
