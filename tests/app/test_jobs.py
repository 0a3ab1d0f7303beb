"""Training jobs in real spawned processes, on a real store.

Every child pays for importing torch (seconds on a shared CPU), so scenarios
that can share a round of children do: jobs that the runner starts together.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.errors import ConflictError
from app.registry.jobs import JobRunner, decide_promotion
from app.registry.records import JobRecord, VersionRecord
from app.registry.registry import Registry
from app.settings import Settings
from model.errors import DataError
from tests.conftest import FEATURES

TINY_JOB = {"window": 8, "hidden_size": 8, "latent_dim": 2, "epochs": 2, "mc_samples": 2}
LONG_JOB = {**TINY_JOB, "epochs": 5000, "patience": 5000}  # runs until stopped
DEADLINE = 45.0


@dataclass
class Seen:
    """What the runner told the service."""

    models: list[tuple[VersionRecord, bool]] = field(default_factory=list)
    updates: list[JobRecord] = field(default_factory=list)
    most_running: int = 0


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def write_series(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="min"),
        "a": np.sin(2 * np.pi * t / 25) + 0.1 * rng.standard_normal(n),
        "b": np.cos(2 * np.pi * t / 25) + 0.1 * rng.standard_normal(n),
        "label": 0,
    })  # fmt: skip
    frame.to_csv(path, index=False)
    return path


def finished(runner: JobRunner, job_id: str, timeout: float = DEADLINE) -> JobRecord:
    """The job's record once it has finished."""
    wait_until(lambda: runner.registry.get_job(job_id).is_finished, timeout)
    return runner.registry.get_job(job_id)


def training_pid(runner: JobRunner, job_id: str) -> int | None:
    """The pid of a job's training process while the runner holds it."""
    run = runner._running.get(job_id)
    return None if run is None else run.child.process.pid


@pytest.fixture
def make_runner(tmp_path: Path):
    """make_runner(name, **settings) -> (runner, seen); stopped and closed afterwards."""
    made: list[JobRunner] = []

    def make(name: str = "store", **settings) -> tuple[JobRunner, Seen]:
        store = Registry(tmp_path / name)
        seen = Seen()

        def on_model(record: VersionRecord, activate: bool) -> None:
            seen.models.append((record, activate))
            if activate:  # what the service does once the new model is loaded
                store.set_active(record.name, record.version)

        def on_job_update(job: JobRecord) -> None:
            seen.updates.append(job)
            seen.most_running = max(seen.most_running, store.count_jobs_by_state()["running"])

        config = Settings(store=tmp_path / name, _env_file=None, **settings)
        runner = JobRunner(store, config, on_model, on_job_update, cancel_grace=10.0)
        made.append(runner)
        return runner, seen

    yield make
    for runner in made:
        runner.stop(timeout=15)
        runner.registry.close()


def test_a_job_trains_reports_every_epoch_and_registers_a_version(make_runner, tmp_path):
    runner, seen = make_runner()
    data = write_series(tmp_path / "metrics.csv")
    runner.start()
    job = runner.submit(
        model="default", source="upload:metrics.csv", data_path=data, params=TINY_JOB
    )
    assert job.state == "queued"

    done = finished(runner, job.id, DEADLINE)

    assert done.state == "succeeded", done.error
    assert done.progress == 1.0 and done.started and done.finished and done.error is None
    assert [e["epoch"] for e in done.history] == [1, 2]
    assert all(np.isfinite([e["train_loss"], e["val_loss"]]).all() for e in done.history)
    # the parent saw the first epoch while the job was still running
    assert any(u.state == "running" and len(u.history) == 1 for u in seen.updates)
    assert [u.progress for u in seen.updates if u.history][:1] == [0.5]
    record = runner.registry.get_version("default", done.model_version)
    assert record.job_id == job.id and record.source == "upload:metrics.csv"
    assert record.feature_names == ["a", "b"]  # no timestamp, no label
    assert record.window == 8 and record.path.is_file()
    assert done.promoted is True and done.promotion_note == "there was no active model"
    assert [(m.version, activate) for m, activate in seen.models] == [(record.version, True)]
    assert runner.registry.active_versions().get("default") == record.version
    assert list(runner.registry.tmp_dir.iterdir()) == []


def test_bad_data_fails_the_job_with_the_reason(make_runner, tmp_path):
    runner, _ = make_runner()
    broken = tmp_path / "broken.csv"
    broken.write_text("a,b\n1,2\n3,oops\n5,6\n")
    runner.start()
    job = runner.submit(model="default", source="t", data_path=broken, params=TINY_JOB)

    failed = finished(runner, job.id, DEADLINE)

    assert failed.state == "failed"
    assert failed.error == "column 'b' is not numeric: row 1 holds 'oops'"
    assert failed.model_version is None and failed.finished is not None
    assert [m.versions for m in runner.registry.list_models()] == [0]
    assert list(runner.registry.tmp_dir.iterdir()) == []


def test_unknown_parameters_are_refused_before_a_job_exists(make_runner, tmp_path):
    runner, _ = make_runner()
    with pytest.raises(DataError, match="unknown model parameter") as caught:
        runner.submit(
            model="default", source="t", data_path=tmp_path / "x.csv", params={"windows": 8}
        )
    assert caught.value.field == "windows"
    for bad in ({"window": 2}, {"window": "16"}, {"window": 16.0}, {"beta": True}):
        with pytest.raises(DataError) as caught:
            runner.submit(model="default", source="t", data_path=tmp_path / "x.csv", params=bad)
        assert caught.value.field == next(iter(bad))
    assert runner.registry.list_jobs() == []


def test_a_queued_job_is_cancelled_at_once(make_runner, tmp_path):
    runner, seen = make_runner()  # never started: the job stays queued
    job = runner.submit(model="default", source="t", data_path=tmp_path / "x.csv", params={})
    cancelled = runner.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.started is None
    assert cancelled.finished is not None
    assert seen.updates[-1].state == "cancelled"
    with pytest.raises(ConflictError, match=f"job {job.id} already cancelled"):
        runner.cancel(job.id)


def test_limit_cancel_and_kill_of_running_jobs(make_runner, tmp_path):
    """Two slots, three jobs: the third waits; a running job is cancelled, another killed."""
    runner, seen = make_runner(max_concurrent_jobs=2)
    data = write_series(tmp_path / "metrics.csv")
    runner.start()
    first, second, third = (
        runner.submit(model="default", source=f"t{i}", data_path=data, params=LONG_JOB)
        for i in range(3)
    )
    store = runner.registry
    wait_until(lambda: store.count_jobs_by_state()["running"] == 2)
    assert store.get_job(third.id).state == "queued"
    assert runner.cancel(third.id).state == "cancelled"  # queued: no process involved

    os.kill(training_pid(runner, second.id), signal.SIGKILL)
    killed = finished(runner, second.id, DEADLINE)
    assert killed.state == "failed"
    assert killed.error == f"training process exited with code {-signal.SIGKILL}"

    wait_until(lambda: store.get_job(first.id).history)  # it is training now
    cancelled = runner.cancel(first.id)
    assert cancelled.state == "cancelled" and cancelled.history and cancelled.finished

    assert seen.most_running == 2
    wait_until(lambda: training_pid(runner, first.id) is None)  # the cancelled child exits too
    assert store.count_jobs_by_state()["running"] == 0
    assert [m.versions for m in store.list_models()] == [0]  # no version was registered
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(ConflictError, match="already failed"):
        runner.cancel(second.id)


def test_stop_fails_running_jobs_as_interrupted(make_runner, tmp_path):
    runner, _ = make_runner()
    data = write_series(tmp_path / "metrics.csv")
    runner.start()
    running = runner.submit(model="default", source="t", data_path=data, params=LONG_JOB)
    queued = runner.submit(model="default", source="t", data_path=data, params=LONG_JOB)
    wait_until(lambda: runner.registry.get_job(running.id).state == "running")

    runner.stop(timeout=6)  # the child, still starting up, is terminated after 1.5 s

    stopped = runner.registry.get_job(running.id)
    assert stopped.state == "failed"
    assert stopped.error == "interrupted: the service stopped while this job was running"
    assert runner.registry.get_job(queued.id).state == "queued"  # runs at the next start


@pytest.mark.parametrize(
    ("policy", "activate", "note"),
    [
        ("always", True, "promotion policy 'always'"),
        ("manual", False, "promotion policy 'manual'"),
        ("if_better", False, "validation loss 1.2 is worse than the active model's 1.1"),
    ],
)
def test_decide_promotion(policy, activate, note):
    outcome = {"new_loss": 9.6, "window": 8, "active_loss": 17.6, "active_window": 16}
    decision = decide_promotion(policy, outcome, had_active=True)
    assert decision[0] is activate and decision[1].startswith(note)


def test_if_better_promotes_a_better_model_and_explains_an_incomparable_one():
    better = {"new_loss": 8.0, "window": 8, "active_loss": 17.6, "active_window": 16}
    assert decide_promotion("if_better", better, had_active=True)[0] is True
    assert decide_promotion("if_better", {}, had_active=False) == (
        True,
        "there was no active model",
    )
    other = {"active_loss": None, "reason": "variables differ from the active model"}
    assert decide_promotion("if_better", other, had_active=True) == (
        False,
        "variables differ from the active model",
    )


@pytest.mark.parametrize("policy", ["if_better", "always"])
def test_a_worse_model_is_promoted_only_if_the_policy_says_so(
    make_runner, model_file, synthetic, policy
):
    """A deliberately weak job (1 epoch, tiny net) against the well-trained session model;
    ``manual`` takes the same path as a refused ``if_better`` (see test_decide_promotion)."""
    runner, seen = make_runner(promotion=policy)
    store = runner.registry
    good = store.register_version(
        "default", Path(shutil.copyfile(model_file, store.root / "good.lvad")), source="good"
    )
    store.set_active("default", good.version)
    data = store.root.parent / "tail.csv"  # data the good model knows, 400 rows
    pd.DataFrame(synthetic.train[-400:], columns=FEATURES).to_csv(data, index=False)
    runner.start()
    job = runner.submit(
        model="default", source="t", data_path=data, params={**TINY_JOB, "window": 16, "epochs": 1}
    )

    done = finished(runner, job.id, DEADLINE)

    assert done.state == "succeeded", done.error
    record = store.get_version("default", done.model_version)
    promoted = policy == "always"
    assert [(m.version, activate) for m, activate in seen.models] == [(2, promoted)]
    assert done.promoted is promoted and record.active is promoted
    assert store.active_versions().get("default") == (2 if promoted else 1)
    if policy == "if_better":
        assert "is worse than the active model's" in done.promotion_note
        assert record.note == done.promotion_note
    else:
        assert done.promotion_note == "promotion policy 'always'" and record.note is None
