"""What the model store holds: registered model versions and training jobs.

The records are plain frozen dataclasses; the SQL schema and the row conversions
live here too so that :mod:`app.store` is only about transactions and files.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.detector import Detector

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
INTERRUPTED = "interrupted: the service stopped while this job was running"
JOB_FIELDS = frozenset(
    {"state", "started", "finished", "progress", "error", "model_version", "promoted",
     "promotion_note"}
)  # fmt: skip
EPOCHS_KEPT = 1000  # per job, the latest

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY, file TEXT NOT NULL, created TEXT NOT NULL, job_id TEXT,
    source TEXT NOT NULL, validation_loss REAL, feature_names TEXT NOT NULL,
    window INTEGER NOT NULL, threshold REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_active ON models (active) WHERE active = 1;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    created TEXT NOT NULL, started TEXT, finished TEXT, source TEXT NOT NULL,
    data_path TEXT NOT NULL, params TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]', error TEXT, model_version INTEGER, promoted INTEGER,
    promotion_note TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS epochs (
    job_id TEXT NOT NULL, epoch INTEGER NOT NULL, report TEXT NOT NULL,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ModelRecord:
    version: int
    path: Path  # absolute path of the artifact
    created: str  # when it was registered
    job_id: str | None  # the job that trained it, if any
    source: str  # where it came from, e.g. "upload:metrics.csv", "demo"
    validation_loss: float | None  # mean negative ELBO per window, own validation split, nats
    feature_names: list[str]
    window: int
    threshold: float
    active: bool
    note: str | None  # e.g. why it was not promoted


@dataclass(frozen=True)
class JobRecord:
    id: str
    state: str  # one of JOB_STATES
    created: str
    started: str | None
    finished: str | None
    source: str  # e.g. "upload:metrics.csv" or "path:sub/file.csv"
    data_path: str
    params: dict  # ModelConfig overrides
    progress: float  # 0..1: epochs done / max epochs; 1 when succeeded
    history: list[dict]  # EpochReport.to_dict() per epoch, the latest EPOCHS_KEPT
    error: str | None
    model_version: int | None
    promoted: bool | None
    promotion_note: str | None

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


def own_validation_loss(detector: Detector) -> float | None:
    """The training's best validation loss converted to original units (nats per window).

    Equals ``detector.validation_loss`` on the model's own validation split.
    """
    loss = detector.metadata.get("validation_loss")
    if not isinstance(loss, int | float) or not math.isfinite(loss):
        return None
    return float(loss) + detector.window * sum(math.log(s) for s in detector.normalizer.std)


def model_from_row(row: sqlite3.Row, root: Path) -> ModelRecord:
    return ModelRecord(
        version=row["version"], path=root / row["file"], created=row["created"],
        job_id=row["job_id"], source=row["source"], validation_loss=row["validation_loss"],
        feature_names=json.loads(row["feature_names"]), window=row["window"],
        threshold=row["threshold"], active=bool(row["active"]), note=row["note"],
    )  # fmt: skip


def model_row(
    detector: Detector, version: int, file: str, *, source: str, job_id: str | None, **extra: Any
) -> dict[str, Any]:
    """The models table's columns for ``detector`` registered as ``version`` in ``file``."""
    return {
        "version": version, "file": file, "created": utc_now(), "job_id": job_id,
        "source": source, "validation_loss": own_validation_loss(detector),
        "feature_names": json.dumps(detector.feature_names), "window": detector.window,
        "threshold": float(detector.threshold.value), **extra,
    }  # fmt: skip


def job_from_row(row: sqlite3.Row, history: list[dict]) -> JobRecord:
    promoted = row["promoted"]
    return JobRecord(
        id=row["id"], state=row["state"], created=row["created"], started=row["started"],
        finished=row["finished"], source=row["source"], data_path=row["data_path"],
        params=json.loads(row["params"]), progress=row["progress"],
        history=history, error=row["error"],
        model_version=row["model_version"],
        promoted=None if promoted is None else bool(promoted),
        promotion_note=row["promotion_note"],
    )  # fmt: skip
