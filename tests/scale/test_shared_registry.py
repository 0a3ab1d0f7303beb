"""The registry on a real PostgreSQL: its migrations, files as rows, the job claims and
the heartbeat rule, the advisory lock, and an embedded store migrated into it."""

from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from app.cli import main
from app.errors import ConflictError, TooManyJobs
from app.registry import claims
from app.registry.coordination import SchedulerLock
from app.registry.database import MIGRATIONS
from app.registry.files import CHUNK
from app.registry.migrate import NOT_MIGRATED
from app.registry.records import VersionRecord
from app.registry.registry import Registry
from app.registry.streams import StreamStates
from app.registry.worker import Executor
from app.settings import Settings
from model.detector import Detector
from tests.app.conftest import seeded_store


def libpq(url: str) -> str:
    return url.replace("+psycopg", "", 1)


def test_migrations_create_the_legacy_schema_and_convert_it_on_postgres(database, tmp_path):
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")  # the single-model schema
        connection.execute(
            sa.text(
                'INSERT INTO models (version, file, created, source, feature_names, "window",'
                " threshold, active) VALUES (1, 'models/v0001.lvad', '2024-01-01', 'test',"
                " '[\"a\"]', 16, 1.5, 1)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO jobs (id, state, created, source, data_path, params, history)"
                " VALUES ('j1', 'succeeded', '2024-01-01', 'x', 'd.csv', '{}',"
                ' \'[{"epoch": 1}, {"epoch": 2}]\')'
            )
        )
    engine.dispose()
    registry = Registry(tmp_path / "cache", database)  # upgrades to the newest revision
    try:
        assert registry.active_versions() == {"default": 1}
        job = registry.get_job("j1")
        epochs = [e["epoch"] for e in job.history]
        assert (job.model, epochs, job.attempts) == ("default", [1, 2], 0)
        with psycopg.connect(libpq(database)) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)
    finally:
        registry.close()


def test_artifacts_are_rows_that_each_replica_caches(database, tmp_path, model_file):
    one, other = Registry(tmp_path / "one", database), Registry(tmp_path / "two", database)
    try:
        upload = tmp_path / "upload.lvad"
        shutil.copy(model_file, upload)
        record = one.register_version("db", upload, source="test")
        with psycopg.connect(libpq(database)) as db:
            chunks = db.execute("SELECT count(*) FROM stored_files WHERE path = %s",
                                ("models/db/v0001.lvad",)).fetchone()[0]  # fmt: skip
        assert chunks == math.ceil(model_file.stat().st_size / CHUNK)
        seen = other.get_version("db", 1)
        assert not seen.path.exists()  # not on the other replica until asked for
        cached = other.local_file(seen)
        assert cached == tmp_path / "two" / "models" / "db" / "v0001.lvad"
        assert cached.read_bytes() == model_file.read_bytes() == one.local_file(record).read_bytes()
        assert Detector.load(cached).feature_names == Detector.load(model_file).feature_names
        assert not any((tmp_path / "two" / "tmp").iterdir())  # the fetch left nothing behind
    finally:
        one.close()
        other.close()


def test_replicas_registering_one_name_together_number_its_versions_in_turn(
    database, tmp_path, model_file
):
    replicas = [Registry(tmp_path / f"replica-{n}", database) for n in range(4)]
    uploads = []
    for n in range(8):
        uploads.append(tmp_path / f"upload-{n}.lvad")
        shutil.copy(model_file, uploads[-1])
    try:

        def register(n: int) -> VersionRecord:  # each transaction held open a while
            return replicas[n % 4].register_version(
                "race", uploads[n], source="test", within=lambda db, version: time.sleep(0.3)
            )

        with ThreadPoolExecutor(len(uploads)) as pool:  # two writers per replica at once
            registered = list(pool.map(register, range(len(uploads))))
        assert sorted(record.version for record in registered) == list(range(1, 9))
        assert [v.version for v in replicas[0].list_versions("race")] == list(range(8, 0, -1))
    finally:
        for replica in replicas:
            replica.close()


def test_replicas_adding_jobs_together_keep_the_queue_bound(database, tmp_path):
    replicas = [Registry(tmp_path / f"replica-{n}", database) for n in range(4)]
    try:

        def add(n: int) -> bool:
            try:
                replicas[n % 4].create_job(
                    model="m", source="x", data_path=Path("d.csv"), params={}, max_queued=3
                )
            except TooManyJobs:
                return False
            return True

        with ThreadPoolExecutor(12) as pool:  # three at once per replica
            accepted = list(pool.map(add, range(12)))
        assert sum(accepted) == 3
        assert len(replicas[0].list_jobs()) == 3
    finally:
        for replica in replicas:
            replica.close()


def new_job(registry: Registry) -> str:
    return registry.create_job(model="m", source="x", data_path=Path("jobs/x/d.csv"), params={}).id


def test_one_claim_wins_and_a_lost_job_is_retried_then_failed(database, tmp_path):
    registry = Registry(tmp_path, database)
    try:
        job_id = new_job(registry)
        assert claims.claim(registry, job_id, "w1:1") == 1
        assert claims.claim(registry, job_id, "w2:2") is None  # running: nobody else
        assert claims.add_epoch(registry, job_id, 1, {"epoch": 1, "epochs": 4})
        assert claims.beat(registry, job_id, 1)
        later = datetime.now(UTC) + timedelta(seconds=61)
        assert claims.sweep_lost(registry, 60, 2) == ([], [])  # its heartbeat is fresh
        assert claims.sweep_lost(registry, 60, 2, now=later) == ([job_id], [])
        job = registry.get_job(job_id)
        assert (job.state, job.attempts, job.started) == ("queued", 1, None)
        assert not claims.beat(registry, job_id, 1)  # the lost attempt learns it is over
        assert claims.claim(registry, job_id, "w2:2") == 2
        assert registry.get_job(job_id).history == []  # the new attempt starts afresh
        later = datetime.now(UTC) + timedelta(seconds=61)
        assert claims.sweep_lost(registry, 60, 2, now=later) == ([], [job_id])
        job = registry.get_job(job_id)
        assert job.state == "failed" and job.attempts == 2 and job.finished
        assert job.error.startswith("worker lost: no heartbeat for 60 s")
    finally:
        registry.close()


def test_a_cancel_ends_the_attempt_and_a_finished_job_refuses_it(database, tmp_path):
    registry = Registry(tmp_path, database)
    try:
        job_id = new_job(registry)
        assert claims.claim(registry, job_id, "w1:1") == 1
        assert claims.cancel(registry, job_id).state == "cancelled"
        assert not claims.beat(registry, job_id, 1)
        assert not claims.add_epoch(registry, job_id, 1, {"epoch": 1, "epochs": 4})
        with registry.engine.begin() as db:
            assert not claims.finish(db, job_id, 1, state="succeeded")
        with pytest.raises(ConflictError, match="already cancelled"):
            claims.cancel(registry, job_id)
        assert registry.get_job(job_id).history == []
    finally:
        registry.close()


def test_a_message_for_a_job_no_longer_queued_is_ignored(database, tmp_path):
    settings = Settings(store=tmp_path, registry_url=database, broker_url="redis://127.0.0.1:1/0")
    registry = Registry.open(settings)
    try:
        job_id = new_job(registry)
        claims.cancel(registry, job_id)
        before = registry.get_job(job_id)
        assert Executor(settings).run(job_id) == "ignored"
        assert Executor(settings).run("no-such-job") == "ignored"
        assert registry.get_job(job_id) == before
    finally:
        registry.close()


def test_one_replica_holds_the_scheduler_lock_and_another_takes_it_over(database, tmp_path):
    one, other = Registry(tmp_path / "one", database), Registry(tmp_path / "two", database)
    first, second = SchedulerLock(one, "pull-scheduler"), SchedulerLock(other, "pull-scheduler")
    try:
        assert first.holds() and first.holds()
        assert not second.holds()
        with psycopg.connect(libpq(database), autocommit=True) as db:  # its session dies
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted"
            )
        assert not first.holds()  # the lost connection lost the lock
        assert second.holds()
        assert not first.holds()
        second.release()
        assert first.holds()
    finally:
        first.release()
        second.release()
        one.close()
        other.close()
    embedded = Registry(tmp_path / "embedded")
    try:
        assert SchedulerLock(embedded, "pull-scheduler").holds()  # one process: always
    finally:
        embedded.close()


def test_an_embedded_store_migrates_into_postgres(database, tmp_path, model_file, capsys):
    store = tmp_path / "store"
    seeded_store(store, model_file)
    source = Registry(store)
    data = source.job_dir("done1") / "data.csv"
    data.write_text("a,b\n1,2\n")
    source.create_job(model="default", source="upload:data.csv", data_path=data, params={},
                      job_id="done1")  # fmt: skip
    source.update_job("done1", state="succeeded", finished="2024-01-02T00:00:00.000+00:00")
    source.add_epoch("done1", {"epoch": 1, "epochs": 1}, 1.0)
    source.create_job(model="default", source="x", data_path=data, params={}, job_id="queued1")
    stream = Detector.load(model_file).stream_state(causal=True)
    StreamStates(source.engine, 10).save("default", "web-1", 1, stream, None)
    source.close()
    assert main(["registry", "migrate", "--from", str(store), "--to", database]) == 0
    assert "1 model(s), 1 version(s), 2 job(s) and 2 file(s)" in capsys.readouterr().out
    registry = Registry(tmp_path / "cache", database)
    try:
        assert registry.active_versions() == {"default": 1}
        record = registry.get_version("default", 1)
        assert registry.local_file(record).read_bytes() == model_file.read_bytes()
        done, queued = registry.get_job("done1"), registry.get_job("queued1")
        assert done.state == "succeeded" and done.history == [{"epoch": 1, "epochs": 1}]
        assert registry.files.local(done.data_path).read_text() == "a,b\n1,2\n"
        assert (queued.state, queued.error) == ("failed", NOT_MIGRATED)
        carried = StreamStates(registry.engine, 10).get("default", "web-1")
        assert (carried.version, carried.state) == (1, stream)  # streams go on where they were
    finally:
        registry.close()
    source = Registry(store)
    assert source.list_jobs()[0].state == "queued"  # the store is left as it was
    source.close()
    assert main(["registry", "migrate", "--from", str(store), "--to", database]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"registry_url": "postgresql+psycopg://u@h/db"}, "LVAD_BROKER_URL is not"),
        ({"broker_url": "redis://h:6379/0"}, "LVAD_REGISTRY_URL is not"),
        ({"registry_url": "sqlite:///x", "broker_url": "redis://h/0"}, "a postgresql"),
    ],
)
def test_scale_out_settings_are_checked(env, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Settings(store=tmp_path, **env)
