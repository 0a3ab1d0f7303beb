"""Training jobs from what a request brings: an uploaded file, or a file under the data
directory.

The cheap checks come first (the parameters, the model name, room in the queue), then
the file is written durably and checked in the checking process (``inspection.py``)
before the job is queued, so a bad file is refused at once rather than failing later;
an upload lands in ``jobs/<id>/`` and is gone if refused.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from app.errors import ForbiddenError, full_disk_is_507
from app.registry.inspection import FileChecker
from app.registry.jobs import JobRunner
from app.registry.records import JobRecord, check_model_name
from app.registry.registry import Registry
from app.registry.training import validate_params
from model.artifact import fsync_directory
from model.errors import DataError, shorten

UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


class JobIntake:
    def __init__(
        self,
        registry: Registry,
        runner: JobRunner,
        checker: FileChecker,
        data_dir: Path | None,
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.checker = checker
        self.data_dir = data_dir

    def from_upload(
        self, model: str, filename: str, source_file: BinaryIO, params: dict
    ) -> JobRecord:
        suffix = Path(filename or "").suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise DataError(
                f"upload {shorten(repr(filename))}: expected one of {', '.join(UPLOAD_SUFFIXES)}",
                field="file",
            )
        self._check_request(model, params)  # before a byte is written
        job_id = uuid.uuid4().hex
        folder = self.registry.job_dir(job_id)
        path = folder / f"data{suffix}"
        name = shorten(Path(filename).name, 100)
        try:
            with full_disk_is_507(f"upload {name!r}"):
                save_durably(source_file, path)
            self.checker.check(path, f"upload {name!r}")
            return self.runner.submit(
                model=model, source=f"upload:{name}", data_path=path, params=params, job_id=job_id
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def from_path(self, model: str, relative: str, params: dict) -> JobRecord:
        path = self.resolve(relative)
        self._check_request(model, params)
        self.checker.check(path, f"path {shorten(relative)!r}")  # a bad file is refused at once
        return self.runner.submit(
            model=model, source=f"path:{relative}", data_path=path, params=params
        )

    def from_arrays(
        self, model: str, values: np.ndarray, variables: list[str], params: dict, source: str
    ) -> JobRecord:
        """A job on data the service read itself (pull mode): ``values`` (n, D) named
        ``variables``, written as Parquet under ``jobs/<id>/``, then as an upload."""
        self._check_request(model, params)
        job_id = uuid.uuid4().hex
        folder = self.registry.job_dir(job_id)
        path = folder / "data.parquet"
        try:
            with full_disk_is_507(f"the training data of {model!r}"):
                pd.DataFrame(values, columns=variables).to_parquet(path, index=False)
                with path.open("rb+") as written:
                    os.fsync(written.fileno())
                fsync_directory(folder)
            self.checker.check(path, f"the data read for {model!r}")
            return self.runner.submit(
                model=model, source=source, data_path=path, params=params, job_id=job_id
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _check_request(self, model: str, params: dict) -> None:
        check_model_name(model)
        validate_params(params)
        self.runner.check_room()

    def resolve(self, relative: str) -> Path:
        """``relative`` under the data directory; ForbiddenError for anything outside it."""
        if self.data_dir is None:
            raise ForbiddenError(
                "no data directory is configured (LVAD_DATA_DIR); upload a file", field="path"
            )
        base = Path(self.data_dir).resolve()
        shown = shorten(relative, 120)
        try:  # a NUL byte (ValueError), a symlink loop (RuntimeError) or an overlong name (OSError)
            path = (base / relative).resolve()
            inside = path.is_relative_to(base)
            found = inside and path.is_file()
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(f"path {shown!r} is not a usable file name", field="path") from exc
        if not inside:
            raise ForbiddenError(f"path {shown!r} is outside the data directory", field="path")
        if not found:
            raise DataError(f"no file {shown!r} in the data directory", field="path")
        return path

    def demo(self, model: str, params: dict) -> JobRecord:
        """A job training ``model`` on the built-in demo data (an empty store's default)."""
        from model.evaluation.demo import make_demo

        job_id = uuid.uuid4().hex
        path = self.registry.job_dir(job_id) / "demo-train.csv"
        make_demo().train.to_csv(path, index=False)
        return self.runner.submit(
            model=model, source="bootstrap:demo", data_path=path, params=params, job_id=job_id
        )


def save_durably(source: BinaryIO, path: Path) -> None:
    """Copy ``source`` to the new file ``path``, on the disk before this returns."""
    with path.open("wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    fsync_directory(path.parent)
    fsync_directory(path.parent.parent)
