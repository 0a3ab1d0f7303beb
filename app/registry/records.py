"""What the registry holds: named models, their versions, and training jobs.

Records are plain frozen dataclasses, built from the registry's rows here so that
``app/registry/registry.py`` is only about transactions and files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from model.detector import Detector
from model.errors import DataError

MODEL_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
DEFAULT_MODEL = "default"  # the name POST /v1/score and /v1/sample use
INTERRUPTED = "interrupted: the service stopped while this job was running"
CANCELLED = "cancelled on request"
EPOCHS_KEPT = 1000  # epoch reports kept per job, the latest


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


JOB_FIELDS = frozenset(
    {"state", "started", "finished", "progress", "error", "model_version", "promoted",
     "promotion_note"}
)  # fmt: skip


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name (``[a-z][a-z0-9_-]{0,62}``); DataError otherwise."""
    if not isinstance(name, str) or re.fullmatch(MODEL_NAME, name) is None:
        shown = name if len(str(name)) <= 70 else f"{str(name)[:67]}..."
        raise DataError(
            f"model name {shown!r}: use 1-63 of a-z, 0-9, '_' and '-', starting with a letter",
            field="model",
        )
    return name


@dataclass(frozen=True)
class VersionRecord:
    """One registered version of a named model."""

    name: str
    version: int
    path: Path  # absolute path of the artifact
    created: str  # when it was registered
    job_id: str | None  # the job that trained it, if any
    source: str  # where it came from, e.g. "upload:metrics.csv", "bootstrap:demo"
    validation_loss: float | None  # mean negative ELBO per window, own validation split, nats
    feature_names: list[str]
    window: int
    threshold: float
    active: bool
    note: str | None  # e.g. why it was not promoted


@dataclass(frozen=True)
class ModelRecord:
    """A named model: its versions' count and its active version, if any."""

    name: str
    created: str
    active_version: int | None
    versions: int
    active: VersionRecord | None


@dataclass(frozen=True)
class JobRecord:
    id: str
    model: str  # the name it trains a version of
    state: JobState
    created: str
    started: str | None
    finished: str | None
    source: str  # e.g. "upload:metrics.csv" or "path:sub/file.csv"
    data_path: str
    params: dict  # ModelConfig overrides
    progress: float  # 0..1: epochs done / max epochs; 1 when succeeded
    history: list[dict]  # EpochReport.to_dict() per epoch
    error: str | None
    model_version: int | None
    promoted: bool | None
    promotion_note: str | None
    attempts: int = 0  # times a worker started it (scale-out); 0 in the embedded store

    @property
    def is_finished(self) -> bool:
        return self.state.finished


def own_validation_loss(detector: Detector) -> float | None:
    """The training's best validation loss converted to original units (nats per window).

    Equals ``detector.validation_loss`` on the model's own validation split.
    """
    loss = detector.metadata.get("validation_loss")
    if not isinstance(loss, int | float) or not math.isfinite(loss):
        return None
    return float(loss) + detector.normalizer.log_jacobian(detector.window)


def version_record(row: Mapping[str, Any], root: Path, active: int | None) -> VersionRecord:
    return VersionRecord(
        name=row["name"], version=row["version"], path=root / row["file"],
        created=row["created"], job_id=row["job_id"], source=row["source"],
        validation_loss=row["validation_loss"], feature_names=list(row["feature_names"]),
        window=row["window"], threshold=row["threshold"], active=row["version"] == active,
        note=row["note"],
    )  # fmt: skip


def job_record(row: Mapping[str, Any], history: list[dict]) -> JobRecord:
    promoted = row["promoted"]
    return JobRecord(
        id=row["id"], model=row["model"], state=JobState(row["state"]),
        created=row["created"], started=row["started"], finished=row["finished"],
        source=row["source"], data_path=row["data_path"], params=dict(row["params"]),
        progress=row["progress"], history=history, error=row["error"],
        model_version=row["model_version"],
        promoted=None if promoted is None else bool(promoted),
        promotion_note=row["promotion_note"], attempts=row.get("attempts") or 0,
    )  # fmt: skip
