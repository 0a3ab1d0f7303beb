"""A training job's child process (started with "spawn") and the parent's handle on it.

This module imports only the model core, never FastAPI or the service, so a
child starts as fast as torch allows. The child talks to its parent through the
sending end of a one-way pipe, in order:

* ``("epoch", EpochReport.to_dict())`` after every epoch;
* then exactly one of ``("done", outcome)`` (a dict, see :func:`train_and_compare`),
  ``("cancelled", message)`` or ``("error", message)``.

A child that dies without its last message (killed, out of memory) just closes
the pipe; the parent then reports its exit code.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.registry.inspection import load_training_table
from model.config import ModelConfig
from model.detector import Detector, split_point
from model.errors import ArtifactError, LvadError, TrainingCancelled
from model.train import EpochReport


def validate_params(params: dict[str, Any]) -> ModelConfig:
    """The config a job would train with; DataError names an unknown or bad key."""
    return ModelConfig.with_overrides(params)


@dataclass(frozen=True)
class WorkerRequest:
    """Everything the child needs; plain values so it pickles under spawn."""

    job_id: str
    data_path: str
    params: dict[str, Any]  # ModelConfig overrides, already validated by the parent
    artifact_path: str  # where the trained model is saved (store.root/tmp/job-<id>.lvad)
    active_model_path: str | None  # the model to compare with, if any
    torch_threads: int = 1
    max_variables: int | None = None
    source: str = ""  # where the data came from, also written into the artifact
    model: str = ""  # the model it trains a version of, also written into the artifact


def child_main(request: WorkerRequest, conn: Connection, cancel: Any) -> None:
    """Target of the child process: :func:`run_job`, then exit at once.

    The result is already reported and the artifact fsynced; skipping the
    interpreter's teardown saves seconds of CPU with torch loaded.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent: it stops us
    try:
        run_job(request, conn, cancel)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_job(request: WorkerRequest, conn: Connection, cancel: Any) -> None:
    """Train, save, compare, and report every epoch and the outcome through ``conn``."""

    def report_epoch(report: EpochReport) -> None:
        conn.send(("epoch", report.to_dict()))

    parent = os.getppid()

    def should_stop() -> bool:  # asked to, or orphaned by a killed service
        return cancel.is_set() or os.getppid() != parent

    try:
        message: tuple[str, Any] = ("done", train_and_compare(request, should_stop, report_epoch))
    except TrainingCancelled as exc:
        message = ("cancelled", exc.message)
    except LvadError as exc:
        message = ("error", exc.message)
    except Exception as exc:  # anything else still reaches the job's record
        message = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(message)
    except OSError:
        pass  # the parent is gone; nobody is left to tell
    finally:
        conn.close()


def train_and_compare(
    request: WorkerRequest,
    should_stop: Callable[[], bool],
    on_epoch: Callable[[EpochReport], None],
) -> dict[str, Any]:
    """Train on the job's data, save the artifact and measure it against the active model.

    Returns ``{"artifact", "new_loss", "active_loss", "window", "active_window", "reason"}``:
    losses are mean negative ELBO per window (nats) on the job's validation part (its
    last ``val_fraction`` of rows, as in training); ``active_loss`` is None with a
    ``reason`` when the active model cannot be compared.
    """
    torch.set_num_threads(max(1, request.torch_threads))
    config = ModelConfig.with_overrides(request.params)
    table = load_training_table(request.data_path, request.max_variables)
    if should_stop():
        raise TrainingCancelled("training was cancelled")
    detector = Detector.fit(table, config, on_epoch=on_epoch, should_stop=should_stop)
    # the artifact describes where it came from: a lost registry is rebuilt from it
    detector.metadata |= {
        "source": request.source, "job_id": request.job_id, "model": request.model
    }  # fmt: skip
    detector.save(request.artifact_path)
    validation = table.values[split_point(len(table.values), config) :]  # (n_val, D)
    active_loss, active_window, reason = compare_with_active(
        request.active_model_path, table.feature_names, validation
    )
    return {
        "artifact": request.artifact_path,
        "new_loss": float(detector.validation_loss(validation)),
        "window": detector.window,
        "active_loss": active_loss,
        "active_window": active_window,
        "reason": reason,
    }


def compare_with_active(
    path: str | None, names: list[str], validation: np.ndarray
) -> tuple[float | None, int | None, str | None]:
    """(active model's loss on ``validation``, its window, why it could not be computed)."""
    if path is None:
        return None, None, None
    try:
        active = Detector.load(Path(path))
    except ArtifactError as exc:
        return None, None, f"the active model could not be read: {exc.message}"
    if sorted(active.feature_names) != sorted(names):
        return None, active.window, "variables differ from the active model"
    if len(validation) < active.window:
        return (
            None,
            active.window,
            (
                f"the job's validation data ({len(validation)} rows) is shorter than the "
                f"active model's window ({active.window})"
            ),
        )
    columns = [names.index(name) for name in active.feature_names]  # the active model's order
    return float(active.validation_loss(validation[:, columns])), active.window, None


# ---------------------------------------------------------------------- parent side
@dataclass(eq=False)
class ChildProcess:
    """The parent's handle on one job's child: the process, the pipe and the cancel flag."""

    request: WorkerRequest
    process: Any  # a multiprocessing SpawnProcess
    conn: Connection  # receiving end of the pipe
    cancel: Any  # a multiprocessing Event, checked by Detector.fit's should_stop

    @classmethod
    def spawn(cls, context: Any, request: WorkerRequest) -> ChildProcess:
        """Start :func:`run_job` in a new process of ``context`` (a "spawn" context)."""
        receiver, sender = context.Pipe(duplex=False)
        cancel = context.Event()
        name = f"lvad-job-{request.job_id[:8]}"
        process = context.Process(
            target=child_main, args=(request, sender, cancel), name=name, daemon=True
        )
        try:
            process.start()
        except BaseException:
            receiver.close()
            raise
        finally:
            sender.close()  # only the child writes: its exit then reads as end-of-file
        return cls(request, process, receiver, cancel)

    def messages(self) -> Iterator[tuple]:
        """The child's messages until it closes its end of the pipe or exits."""
        while True:
            ready = wait([self.conn, self.process.sentinel])
            if self.conn not in ready and not self.conn.poll():
                return  # exited, nothing left to read
            try:
                yield self.conn.recv()
            except EOFError:
                return

    def reap(self, grace: float) -> int | None:
        """Join the process (killed if it hangs after closing the pipe); its exit code."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        return self.process.exitcode

    def discard_artifact(self) -> None:
        """Remove what the job left in tmp/: the artifact, or its half-written temp file."""
        artifact = Path(self.request.artifact_path)
        artifact.unlink(missing_ok=True)
        for leftover in artifact.parent.glob(f".{artifact.name}.*"):
            leftover.unlink(missing_ok=True)
