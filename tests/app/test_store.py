"""The model store: a real SQLite registry and real artifact files under tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.errors import NotFoundError
from app.recovery import recover
from app.store import JOB_STATES, Store
from model.detector import split_point
from model.errors import ArtifactError
from tests.conftest import FEATURES, TINY


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "store")
    yield store
    store.close()


def copy_of(model_file: Path, directory: Path, name: str = "candidate.lvad") -> Path:
    """register_model moves its input: never hand it the session's shared file."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(model_file, directory / name))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_register_moves_the_file_and_describes_the_model(store, model_file, detector, synthetic):
    artifact = copy_of(model_file, store.root.parent / "in")
    record = store.register_model(artifact, source="upload:tiny.lvad")
    assert record.version == 1
    assert record.path == store.root / "models" / "v0001.lvad" and record.path.is_file()
    assert not artifact.exists()
    assert record.feature_names == FEATURES and record.window == TINY.window
    assert record.threshold == pytest.approx(detector.threshold.value)
    assert record.source == "upload:tiny.lvad" and record.job_id is None
    assert record.active is False and record.note is None
    validation = synthetic.train[split_point(len(synthetic.train), TINY) :]
    assert record.validation_loss == pytest.approx(detector.validation_loss(validation), rel=1e-4)


def test_versions_list_newest_first_and_only_one_is_active(store, model_file, tmp_path):
    for i in range(3):
        store.register_model(copy_of(model_file, tmp_path / f"in{i}"), source=f"s{i}")
    assert [m.version for m in store.list_models()] == [3, 2, 1]
    assert store.get_model(2).source == "s1"
    assert store.active_version() is None
    assert store.set_active(1).active is True
    record = store.set_active(3)
    assert record.version == 3 and record.active
    assert store.active_version() == 3
    assert [m.version for m in store.list_models() if m.active] == [3]


def test_unknown_versions_are_not_found(store):
    with pytest.raises(NotFoundError, match="model version 7 not found"):
        store.get_model(7)
    with pytest.raises(NotFoundError):
        store.set_active(7)
    with pytest.raises(NotFoundError):
        store.set_model_note(7, "x")


def test_model_note_is_kept(store, model_file, tmp_path):
    store.register_model(copy_of(model_file, tmp_path / "in"), source="s")
    store.set_model_note(1, "validation loss is worse")
    assert store.get_model(1).note == "validation loss is worse"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupted_artifact_registers_nothing(store, model_file, tmp_path, damage):
    bad = tmp_path / "bad.lvad"
    data = model_file.read_bytes()
    bad.write_bytes(b"not a model" * 100 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        store.register_model(bad, source="upload:bad.lvad")
    assert store.list_models() == []
    assert files_in(store.models_dir) == []
    assert store.register_model(copy_of(model_file, tmp_path / "in"), source="s").version == 1


def test_a_failed_move_rolls_the_registration_back(store, model_file, tmp_path, monkeypatch):
    artifact = copy_of(model_file, tmp_path / "in")

    def refuse(src, dst):
        raise PermissionError("read-only models directory")

    monkeypatch.setattr("app.store.os.replace", refuse)
    with pytest.raises(PermissionError):
        store.register_model(artifact, source="s")
    monkeypatch.undo()
    assert store.list_models() == []
    assert files_in(store.models_dir) == []
    assert artifact.is_file()


def test_the_registry_survives_a_reopen(tmp_path, model_file):
    store = Store(tmp_path / "store")
    store.register_model(copy_of(model_file, tmp_path / "in"), source="s")
    store.set_active(1)
    job = store.create_job(source="path:x.csv", data_path=tmp_path / "x.csv", params={"epochs": 2})
    store.close()
    again = Store(tmp_path / "store")
    try:
        assert again.active_version() == 1
        assert again.get_job(job.id) == job
    finally:
        again.close()


def test_jobs_are_created_queued_and_updated(store, tmp_path):
    job = store.create_job(
        source="upload:m.csv", data_path=tmp_path / "m.csv", params={"window": 8}
    )
    assert len(job.id) == 32 and job.state == "queued"
    assert job.params == {"window": 8} and job.data_path == str(tmp_path / "m.csv")
    assert job.started is None and job.progress == 0 and job.history == []
    epoch = {"epoch": 1, "epochs": 2, "train_loss": 3.0, "val_loss": 2.5}
    store.add_epoch(job.id, epoch, progress=0.5)
    updated = store.get_job(job.id)
    assert updated.progress == 0.5 and updated.history == [epoch]
    done = store.update_job(job.id, state="succeeded", model_version=3, promoted=False)
    assert (done.state, done.model_version, done.promoted) == ("succeeded", 3, False)
    assert store.get_job(job.id) == done
    with pytest.raises(TypeError, match="params"):
        store.update_job(job.id, params={})
    with pytest.raises(ValueError, match="unknown job state"):
        store.update_job(job.id, state="paused")
    with pytest.raises(NotFoundError, match="job nope not found"):
        store.get_job("nope")


def test_claim_takes_the_oldest_queued_job(store, tmp_path):
    jobs = [store.create_job(source=f"s{i}", data_path=tmp_path, params={}) for i in range(3)]
    assert [j.id for j in store.list_jobs()] == [j.id for j in reversed(jobs)]
    assert [j.id for j in store.list_jobs(limit=2)] == [jobs[2].id, jobs[1].id]
    first = store.claim_next_job()
    assert first.id == jobs[0].id and first.state == "running" and first.started is not None
    assert store.claim_next_job().id == jobs[1].id
    store.update_job(jobs[2].id, state="cancelled")
    assert store.claim_next_job() is None
    counts = store.count_jobs_by_state()
    assert counts == {"queued": 0, "running": 2, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert set(counts) == set(JOB_STATES)


def test_recover_fails_running_jobs_and_deletes_nothing_it_does_not_know(
    store, model_file, tmp_path
):
    kept = store.register_model(copy_of(model_file, tmp_path / "in"), source="s")
    queued = store.create_job(source="a", data_path=tmp_path, params={})
    running = store.create_job(source="b", data_path=tmp_path, params={})
    store.update_job(running.id, state="running")
    (store.models_dir / "v0002.lvad").write_bytes(b"half a model")
    (store.models_dir / ".v0003.lvad.x.tmp").write_bytes(b"")
    copy_of(model_file, store.models_dir, "v0007.lvad")  # published, its commit lost
    (store.tmp_dir / f"job-{running.id}.lvad").write_bytes(b"")
    store.job_dir(queued.id).joinpath("data.csv").write_text("a\n1\n")
    store.job_dir("0" * 32).joinpath("data.csv").write_text("a\n1\n")  # upload with no job

    result = recover(store)
    assert result.failed_jobs == [running.id] and result.adopted == [7]

    failed = store.get_job(running.id)
    assert failed.state == "failed" and failed.finished is not None
    assert failed.error == "interrupted: the service stopped while this job was running"
    assert store.get_job(queued.id).state == "queued"
    assert files_in(store.models_dir) == ["v0001.lvad", "v0007.lvad"] and kept.path.is_file()
    adopted = store.get_model(7)
    assert adopted.source == "recovered:v0007.lvad" and adopted.feature_names == FEATURES
    assert files_in(store.tmp_dir) == []
    assert files_in(store.root / "jobs") == [queued.id]
    assert files_in(store.lost_dir) == ["jobs-" + "0" * 32, "models-.v0003.lvad.x.tmp",
                                        "models-v0002.lvad"]  # fmt: skip
    again = recover(store)
    assert (again.failed_jobs, again.adopted, again.moved) == ([], [], [])
