"""The registry: real SQLite databases and real artifact files under tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import NotFoundError, TooManyJobs
from app.registry.records import JobState
from app.registry.recovery import recover
from app.registry.registry import Registry
from model.detector import split_point
from model.errors import ArtifactError, DataError
from tests.conftest import FEATURES, TINY


@pytest.fixture
def store(tmp_path: Path):
    registry = Registry(tmp_path / "store")
    yield registry
    registry.close()


def copy_of(model_file: Path, directory: Path, name: str = "candidate.lvad") -> Path:
    """register_version moves its input: never hand it the session's shared file."""
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(model_file, directory / name))


def files_in(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_register_moves_the_file_and_describes_the_version(store, model_file, detector, synthetic):
    artifact = copy_of(model_file, store.root.parent / "in")
    record = store.register_version("default", artifact, source="upload:tiny.lvad")
    assert (record.name, record.version) == ("default", 1)
    assert record.path == store.root / "models" / "default" / "v0001.lvad"
    assert record.path.is_file() and not artifact.exists()
    assert record.feature_names == FEATURES and record.window == TINY.window
    assert record.threshold == pytest.approx(detector.threshold.value)
    assert record.source == "upload:tiny.lvad" and record.job_id is None
    assert record.active is False and record.note is None
    validation = synthetic.train[split_point(len(synthetic.train), TINY) :]
    assert record.validation_loss == pytest.approx(detector.validation_loss(validation), rel=1e-4)


def test_each_name_numbers_its_versions_and_has_its_own_active_one(store, model_file, tmp_path):
    for i in range(3):
        store.register_version("db", copy_of(model_file, tmp_path / f"db{i}"), source=f"s{i}")
    store.register_version("api", copy_of(model_file, tmp_path / "api"), source="a")
    assert [v.version for v in store.list_versions("db")] == [3, 2, 1]
    assert store.get_version("db", 2).source == "s1"
    assert store.active_versions() == {}
    assert store.set_active("db", 1).active is True
    record = store.set_active("db", 3)
    assert record.version == 3 and record.active
    store.set_active("api", 1)
    assert store.active_versions() == {"api": 1, "db": 3}
    assert [v.version for v in store.list_versions("db") if v.active] == [3]
    models = store.list_models()
    assert [(m.name, m.active_version, m.versions) for m in models] == [("api", 1, 1), ("db", 3, 3)]
    assert models[1].active is not None and models[1].active.source == "s2"
    assert files_in(store.models_dir) == [
        "api/v0001.lvad", "db/v0001.lvad", "db/v0002.lvad", "db/v0003.lvad"
    ]  # fmt: skip


def test_unknown_names_and_versions_are_not_found(store, model_file, tmp_path):
    with pytest.raises(NotFoundError, match="model 'db' not found"):
        store.get_model("db")
    with pytest.raises(NotFoundError, match="model 'db' not found"):
        store.get_version("db", 1)
    store.register_version("db", copy_of(model_file, tmp_path / "in"), source="s")
    with pytest.raises(NotFoundError, match="model 'db' has no version 7"):
        store.set_active("db", 7)
    with pytest.raises(NotFoundError, match="has no version 7"):
        store.set_version_note("db", 7, "x")
    assert store.active_versions() == {}


@pytest.mark.parametrize("name", ["Default", "1abc", "a b", "", "x" * 64, "../etc"])
def test_a_bad_model_name_is_refused(store, model_file, tmp_path, name):
    with pytest.raises(DataError, match="model name"):
        store.register_version(name, copy_of(model_file, tmp_path / "in"), source="s")
    with pytest.raises(DataError, match="model name"):
        store.create_job(model=name, source="s", data_path=tmp_path, params={})
    assert store.list_models() == [] and files_in(store.models_dir) == []


def test_a_version_note_is_kept(store, model_file, tmp_path):
    store.register_version("default", copy_of(model_file, tmp_path / "in"), source="s")
    store.set_version_note("default", 1, "validation loss is worse")
    assert store.get_version("default", 1).note == "validation loss is worse"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupted_artifact_registers_nothing(store, model_file, tmp_path, damage):
    bad = tmp_path / "bad.lvad"
    data = model_file.read_bytes()
    bad.write_bytes(b"not a model" * 100 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        store.register_version("default", bad, source="upload:bad.lvad")
    assert store.list_models() == []
    assert files_in(store.models_dir) == []
    record = store.register_version("default", copy_of(model_file, tmp_path / "in"), source="s")
    assert record.version == 1


def test_a_failed_move_rolls_the_registration_back(store, model_file, tmp_path, monkeypatch):
    artifact = copy_of(model_file, tmp_path / "in")

    def refuse(src, dst):
        raise PermissionError("read-only models directory")

    monkeypatch.setattr("app.registry.registry.os.replace", refuse)
    with pytest.raises(PermissionError):
        store.register_version("default", artifact, source="s")
    monkeypatch.undo()
    assert store.list_models() == []
    assert files_in(store.models_dir) == []
    assert artifact.is_file()


def test_the_registry_survives_a_reopen(tmp_path, model_file):
    store = Registry(tmp_path / "store")
    store.register_version("default", copy_of(model_file, tmp_path / "in"), source="s")
    store.set_active("default", 1)
    job = store.create_job(
        model="default", source="path:x.csv", data_path=tmp_path / "x.csv", params={"epochs": 2}
    )
    store.add_epoch(job.id, {"epoch": 1, "epochs": 2}, 0.5)
    store.close()
    again = Registry(tmp_path / "store")
    try:
        assert again.active_versions() == {"default": 1}
        assert again.get_job(job.id).history == [{"epoch": 1, "epochs": 2}]
    finally:
        again.close()


def test_jobs_are_created_queued_and_updated(store, tmp_path):
    job = store.create_job(
        model="db", source="upload:m.csv", data_path=tmp_path / "m.csv", params={"window": 8}
    )
    assert len(job.id) == 32 and job.state == "queued" and job.model == "db"
    assert job.params == {"window": 8} and job.data_path == str(tmp_path / "m.csv")
    assert job.started is None and job.progress == 0 and job.history == []
    epochs = [{"epoch": i, "epochs": 2, "train_loss": 3.0 - i, "val_loss": 2.5} for i in (1, 2)]
    for i, epoch in enumerate(epochs):
        store.add_epoch(job.id, epoch, (i + 1) / 2)
    updated = store.get_job(job.id)
    assert updated.progress == 1.0 and updated.history == epochs
    done = store.update_job(job.id, state="succeeded", model_version=3, promoted=False)
    assert (done.state, done.model_version, done.promoted) == ("succeeded", 3, False)
    assert store.get_job(job.id) == done
    with pytest.raises(TypeError, match="params"):
        store.update_job(job.id, params={})
    with pytest.raises(ValueError, match="paused"):
        store.update_job(job.id, state="paused")
    with pytest.raises(NotFoundError, match="job nope not found"):
        store.get_job("nope")


def test_claim_takes_the_oldest_queued_job(store, tmp_path):
    jobs = [
        store.create_job(model=m, source=f"s{i}", data_path=tmp_path, params={})
        for i, m in enumerate(["a", "b", "a"])
    ]
    assert [j.id for j in store.list_jobs()] == [j.id for j in reversed(jobs)]
    assert [j.id for j in store.list_jobs(limit=2)] == [jobs[2].id, jobs[1].id]
    assert [j.id for j in store.list_jobs(model="a")] == [jobs[2].id, jobs[0].id]
    first = store.claim_next_job()
    assert first.id == jobs[0].id and first.state == "running" and first.started is not None
    assert store.claim_next_job().id == jobs[1].id
    store.update_job(jobs[2].id, state="cancelled")
    assert store.claim_next_job() is None
    counts = store.count_jobs_by_state()
    assert counts == {"queued": 0, "running": 2, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert set(counts) == set(JobState)


def test_recover_fails_running_jobs_and_deletes_nothing_it_does_not_know(
    store, model_file, tmp_path
):
    kept = store.register_version("default", copy_of(model_file, tmp_path / "in"), source="s")
    queued = store.create_job(model="default", source="a", data_path=tmp_path, params={})
    running = store.create_job(model="default", source="b", data_path=tmp_path, params={})
    store.update_job(running.id, state="running")
    (store.models_dir / "default" / "v0002.lvad").write_bytes(b"half a model")
    (store.models_dir / "default" / ".v0003.lvad.x.tmp").write_bytes(b"")
    (store.models_dir / "db").mkdir()
    copy_of(model_file, store.models_dir / "db", "v0007.lvad")  # published, its commit lost
    (store.tmp_dir / f"job-{running.id}.lvad").write_bytes(b"")
    store.job_dir(queued.id).joinpath("data.csv").write_text("a\n1\n")
    store.job_dir("0" * 32).joinpath("data.csv").write_text("a\n1\n")  # upload with no job

    result = recover(store)
    assert result.failed_jobs == [running.id] and result.adopted == [("db", 7)]

    failed = store.get_job(running.id)
    assert failed.state == "failed" and failed.finished is not None
    assert failed.error == "interrupted: the service stopped while this job was running"
    assert store.get_job(queued.id).state == "queued"
    assert files_in(store.models_dir) == ["db/v0007.lvad", "default/v0001.lvad"]
    assert kept.path.is_file()
    adopted = store.get_version("db", 7)
    assert adopted.source == "recovered:v0007.lvad" and adopted.feature_names == FEATURES
    assert adopted.note.startswith("registered at start-up")
    assert adopted.active  # db had no active version: its newest adopted one serves
    assert files_in(store.tmp_dir) == []
    assert [p.name for p in (store.root / "jobs").iterdir()] == [queued.id]
    assert files_in(store.lost_dir) == [
        "default-.v0003.lvad.x.tmp", "default-v0002.lvad", "jobs-" + "0" * 32 + "/data.csv"
    ]  # fmt: skip
    again = recover(store)
    assert (again.failed_jobs, again.adopted, again.moved) == ([], [], [])


def test_epochs_are_appended_and_only_the_latest_are_kept(store, tmp_path, monkeypatch):
    monkeypatch.setattr("app.registry.registry.EPOCHS_KEPT", 3)
    job = store.create_job(model="default", source="s", data_path=tmp_path, params={})
    for epoch in range(1, 6):
        store.add_epoch(job.id, {"epoch": epoch, "epochs": 5}, epoch / 5)
    kept = store.get_job(job.id)
    assert [e["epoch"] for e in kept.history] == [3, 4, 5] and kept.progress == 1.0


def test_the_queue_is_bounded(store, tmp_path):
    for i in range(2):
        store.create_job(model="m", source=f"s{i}", data_path=tmp_path, params={}, max_queued=2)
    with pytest.raises(TooManyJobs, match="2 jobs are queued already"):
        store.create_job(model="m", source="s3", data_path=tmp_path, params={}, max_queued=2)
    assert len(store.list_jobs()) == 2


def test_a_second_process_cannot_open_the_store(store):
    script = (
        "import sys; from app.registry.registry import Registry\n"
        "try:\n    Registry(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script, str(store.root)], capture_output=True, text=True,
        cwd=root, timeout=120,
    )  # fmt: skip
    assert "in use by another lvad process" in out.stdout, out.stdout + out.stderr
    assert f"(pid {os.getpid()})" in out.stdout


LEGACY_SCHEMA = """
CREATE TABLE models (
    version INTEGER PRIMARY KEY, file TEXT NOT NULL, created TEXT NOT NULL, job_id TEXT,
    source TEXT NOT NULL, validation_loss REAL, feature_names TEXT NOT NULL,
    window INTEGER NOT NULL, threshold REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
CREATE UNIQUE INDEX models_one_active ON models (active) WHERE active = 1;
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
    created TEXT NOT NULL, started TEXT, finished TEXT, source TEXT NOT NULL,
    data_path TEXT NOT NULL, params TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]', error TEXT, model_version INTEGER, promoted INTEGER,
    promotion_note TEXT
);
CREATE INDEX jobs_state ON jobs (state, seq);
"""  # the schema of stores written before named models, verbatim


def legacy_store(root: Path, model_file: Path) -> Path:
    """A store as the single-model service left it: versions 1 and 2 (2 active), a job."""
    (root / "models").mkdir(parents=True)
    db = sqlite3.connect(root / "registry.sqlite3")
    db.executescript(LEGACY_SCHEMA)
    for version in (1, 2):
        file = f"models/v{version:04d}.lvad"
        shutil.copyfile(model_file, root / file)
        db.execute(
            "INSERT INTO models (version, file, created, source, validation_loss,"
            " feature_names, window, threshold, active, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (version, file, f"2026-01-0{version}T00:00:00.000+00:00", "demo", 80.0 + version,
             json.dumps(FEATURES), TINY.window, 15.0, int(version == 2), None),
        )  # fmt: skip
    history = [{"epoch": 1, "epochs": 2, "train_loss": 3.0}, {"epoch": 2, "epochs": 2}]
    db.execute(
        "INSERT INTO jobs (id, state, created, source, data_path, params, history, progress,"
        " model_version, promoted) VALUES ('j1', 'succeeded', '2026-01-02', 'upload:m.csv',"
        " 'x', '{\"epochs\": 2}', ?, 1.0, 2, 1)",
        (json.dumps(history),),
    )
    db.commit()
    db.close()
    return root


def test_a_single_model_store_becomes_the_default_model(tmp_path, model_file):
    root = legacy_store(tmp_path / "store", model_file)
    store = Registry(root)
    try:
        assert store.active_versions() == {"default": 2}
        versions = store.list_versions("default")
        assert [(v.version, v.active, v.validation_loss) for v in versions] == [
            (2, True, 82.0), (1, False, 81.0)
        ]  # fmt: skip
        assert [v.path for v in versions] == [
            root / "models/v0002.lvad",
            root / "models/v0001.lvad",
        ]
        assert versions[0].feature_names == FEATURES
        job = store.get_job("j1")
        assert (job.model, job.state, job.params, job.promoted) == (
            "default", "succeeded", {"epochs": 2}, True
        )  # fmt: skip
        assert [e["epoch"] for e in job.history] == [1, 2]
        recover(store)  # the old files are known: nothing is moved
        assert files_in(store.models_dir) == ["v0001.lvad", "v0002.lvad"]
        new = store.register_version("default", copy_of(model_file, tmp_path / "in"), source="s")
        assert new.version == 3 and new.path == root / "models" / "default" / "v0003.lvad"
    finally:
        store.close()
    again = Registry(root)  # the migration ran once; opening again changes nothing
    try:
        assert [v.version for v in again.list_versions("default")] == [3, 2, 1]
    finally:
        again.close()
