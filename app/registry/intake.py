"""Training jobs from what a request brings: an uploaded file, or a file under the data
directory. The file is parsed before the job is queued, so a bad file is refused at once
rather than failing later; an upload lands in ``jobs/<id>/`` and is gone if refused."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from app.errors import ForbiddenError
from app.registry.jobs import JobRunner
from app.registry.records import JobRecord, check_model_name
from app.registry.registry import Registry
from app.registry.training import load_training_table, validate_params
from model.errors import DataError

UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


class JobIntake:
    def __init__(
        self, registry: Registry, runner: JobRunner, data_dir: Path | None, max_variables: int
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.data_dir = data_dir
        self.max_variables = max_variables

    def from_upload(
        self, model: str, filename: str, source_file: BinaryIO, params: dict
    ) -> JobRecord:
        check_model_name(model)
        validate_params(params)
        suffix = Path(filename or "").suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise DataError(
                f"upload {filename!r}: expected one of {', '.join(UPLOAD_SUFFIXES)}", field="file"
            )
        job_id = uuid.uuid4().hex
        folder = self.registry.job_dir(job_id)
        path = folder / f"data{suffix}"
        try:
            with path.open("wb") as out:
                shutil.copyfileobj(source_file, out)
            self.check_file(path, f"upload {filename!r}")
            source = f"upload:{Path(filename).name}"
            return self.runner.submit(
                model=model, source=source, data_path=path, params=params, job_id=job_id
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def from_path(self, model: str, relative: str, params: dict) -> JobRecord:
        check_model_name(model)
        validate_params(params)
        path = self.resolve(relative)
        self.check_file(path, f"path {shorten(relative)!r}")
        return self.runner.submit(
            model=model, source=f"path:{relative}", data_path=path, params=params
        )

    def resolve(self, relative: str) -> Path:
        """``relative`` under the data directory; ForbiddenError for anything outside it."""
        if self.data_dir is None:
            raise ForbiddenError(
                "no data directory is configured (LVAD_DATA_DIR); upload a file", field="path"
            )
        base = Path(self.data_dir).resolve()
        shown = shorten(relative)
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

    def check_file(self, path: Path, what: str) -> None:
        """Parse the file now (the training process parses it again, the same way)."""
        try:
            load_training_table(path, self.max_variables)
        except DataError as exc:
            raise type(exc)(f"{what}: {exc.message}", field=exc.field or "file") from exc

    def demo(self, model: str, params: dict) -> JobRecord:
        """A job training ``model`` on the built-in demo data (an empty store's default)."""
        from model.evaluation.demo import make_demo

        job_id = uuid.uuid4().hex
        path = self.registry.job_dir(job_id) / "demo-train.csv"
        make_demo().train.to_csv(path, index=False)
        return self.runner.submit(
            model=model, source="bootstrap:demo", data_path=path, params=params, job_id=job_id
        )


def shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
