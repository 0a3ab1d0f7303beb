"""Training files are checked in a child process, within limits known before parsing.

A job's file is read once when it is submitted, so that a bad one is refused at
once (422) rather than failing the job later. Reading is where the memory goes: a
Parquet file of 25 million zeros is ~100 kB and half a gigabyte once parsed, and
pandas' parsers keep their peak in the process long after (the heap fragments).
So the check runs in a "spawn" child with a cap on its address space, one file per
child (it exits after each, returning its memory), and it first compares the
file's shape (Parquet metadata; a text file's header and line count) with
``LVAD_MAX_VARIABLES`` and ``LVAD_MAX_TRAINING_VALUES`` before anything is
materialised. A child that dies (the cap reached, killed) fails the check with a
422 naming the file; the server itself never parses an upload.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from app.errors import LimitError
from model.data import LABEL_COLUMNS, Table, file_shape, load_table
from model.errors import DataError, LvadError

BASE_ADDRESS_SPACE = 2 << 30  # bytes: the interpreter, numpy, pandas and pyarrow mapped
BYTES_PER_VALUE = 64  # a parsed value, its float64 copies while it is prepared


def check_training_file(path: str, max_variables: int, max_values: int) -> dict[str, int]:
    """In the child: the file's shape within the limits, then the whole file parsed and
    validated as a job would; ``{"rows", "variables"}``. LimitError / DataError."""
    shape = file_shape(path)
    if len(shape.columns) > max_variables + 2:  # a timestamp and a label may come on top
        raise LimitError(
            f"{len(shape.columns)} columns; the limit is {max_variables} variables "
            "(LVAD_MAX_VARIABLES)",
            field="file",
        )
    if shape.values > max_values:
        raise LimitError(
            f"{shape.rows:,} rows x {len(shape.columns)} columns = {shape.values:,} values; "
            f"the limit is {max_values:,} (LVAD_MAX_TRAINING_VALUES)",
            field="file",
        )
    table = load_training_table(path, max_variables)
    return {"rows": len(table.values), "variables": len(table.feature_names)}


def load_training_table(path: str | Path, max_variables: int | None) -> Table:
    """A training file as a Table (label columns ignored); LimitError past ``max_variables``
    (the check here, and the training process that reads the file again, share it)."""
    table = load_table(path, ignore_columns=LABEL_COLUMNS)
    if max_variables is not None and len(table.feature_names) > max_variables:
        raise LimitError(
            f"{len(table.feature_names)} variables; the limit is {max_variables} "
            "(LVAD_MAX_VARIABLES)",
            field="file",
        )
    return table


def _limit_memory(address_space: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


class FileChecker:
    """The server's handle on its checking child (thread-safe; one check at a time)."""

    def __init__(self, max_variables: int, max_values: int) -> None:
        self.max_variables = max_variables
        self.max_values = max_values
        self.address_space = BASE_ADDRESS_SPACE + BYTES_PER_VALUE * max_values
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_memory,
            initargs=(self.address_space,),
            max_tasks_per_child=1,  # the memory a file took goes with its process
        )

    def check(self, path: Path, what: str) -> dict[str, int]:
        """Check ``path`` in the child; errors name the file as ``what``."""
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
            future = self._pool.submit(
                check_training_file, str(path), self.max_variables, self.max_values
            )
            try:
                return future.result()
            except BrokenProcessPool as exc:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                raise DataError(
                    f"{what}: reading it stopped the checking process (out of memory?); "
                    "the file is too large to train on",
                    field="file",
                ) from exc
            except LvadError as exc:  # DataError, LimitError: name the file
                raise type(exc)(f"{what}: {exc.message}", field=exc.field or "file") from exc

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
