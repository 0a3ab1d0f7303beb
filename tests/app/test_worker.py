"""The child's side of a job, run in-process: the message protocol and the comparison."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from app.registry.training import WorkerRequest, compare_with_active, run_job
from model.detector import Detector, split_point
from tests.app.test_jobs import TINY_JOB, write_series
from tests.conftest import FEATURES, TINY


def run_in_process(request: WorkerRequest, cancel: threading.Event | None = None) -> list:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    run_job(request, sender, cancel or threading.Event())
    messages = []
    while True:
        try:
            messages.append(receiver.recv())
        except EOFError:  # run_job closed its end
            return messages


def request_for(data: Path, tmp_path: Path, active: Path | None = None) -> WorkerRequest:
    return WorkerRequest(
        "job1", str(data), TINY_JOB, str(tmp_path / "job-1.lvad"), active and str(active)
    )


def test_reports_each_epoch_then_the_outcome(tmp_path, model_file):
    data = write_series(tmp_path / "m.csv")
    messages = run_in_process(request_for(data, tmp_path, active=model_file))
    assert [m[0] for m in messages] == ["epoch", "epoch", "done"]
    assert [m[1]["epoch"] for m in messages[:2]] == [1, 2]
    outcome = messages[-1][1]
    assert Detector.load(outcome["artifact"]).feature_names == ["a", "b"]
    assert np.isfinite(outcome["new_loss"]) and outcome["window"] == TINY_JOB["window"]
    assert outcome["active_loss"] is None
    assert outcome["reason"] == "variables differ from the active model"


def test_failures_and_cancellation_are_reported_as_messages(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a\n1\nx\n")
    assert run_in_process(request_for(bad, tmp_path)) == [
        ("error", "column 'a' is not numeric: row 1 holds 'x'")
    ]
    stop = threading.Event()
    stop.set()
    data = write_series(tmp_path / "m.csv")
    assert run_in_process(request_for(data, tmp_path), stop) == [
        ("cancelled", "training was cancelled")
    ]
    assert not (tmp_path / "job-1.lvad").exists()


def test_the_active_model_is_compared_in_its_own_column_order(model_file, detector, synthetic):
    validation = synthetic.train[split_point(len(synthetic.train), TINY) :]
    loss, window, reason = compare_with_active(str(model_file), FEATURES, validation)
    assert reason is None and window == TINY.window
    assert loss == pytest.approx(detector.validation_loss(validation))
    shuffled = [3, 1, 0, 2]
    names = [FEATURES[i] for i in shuffled]
    assert compare_with_active(str(model_file), names, validation[:, shuffled])[0] == loss


def test_an_incomparable_active_model_gives_a_reason(model_file, synthetic, tmp_path):
    short = synthetic.train[:10]
    assert (
        "shorter than the active model's window (16)"
        in compare_with_active(str(model_file), FEATURES, short)[2]
    )
    missing = compare_with_active(str(tmp_path / "gone.lvad"), FEATURES, synthetic.train)
    assert missing[0] is None and missing[2].startswith("the active model could not be read")
    assert compare_with_active(None, FEATURES, synthetic.train) == (None, None, None)
