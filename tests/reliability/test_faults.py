"""Faults under a real ``lvad serve``: damaged model files and a disk that fills up.

SIGKILL mid-job, activation under load and graceful drain are in
tests/app/test_server_process.py; docs/reliability.md lists them all.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.registry.registry import Registry
from tests.app.live import AUTH, TINY_PARAMS, LiveServer, submit_job, synthetic_windows, wait_until
from tests.conftest import FEATURES, missing_component

WINDOW = {"windows": synthetic_windows(1).tolist(), "variables": FEATURES, "explain": "none"}
TMPFS_BYTES = 8192  # far less than a model file (about 30 kB): every save runs out of space


ACTIVATE_2 = "/v1/models/default/versions/2/activate"


def metric(client: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def add_version(store: Path, model_file: Path, *, active: bool = False) -> int:
    """Register a copy of ``model_file`` in the (stopped) server's store; its version."""
    registry = Registry(store)
    try:
        copy = store / "incoming.lvad"
        shutil.copy(model_file, copy)
        record = registry.register_version("default", copy, source="test")
        if active:
            registry.set_active("default", record.version)
        return record.version
    finally:
        registry.close()


def corrupt(path: Path) -> None:
    """Flip bytes in the middle of the file (the weights): its checksum no longer matches."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def assert_serves(client: httpx.Client, version: int) -> None:
    assert client.get("/readyz").json()["models"] == {"default": version}
    response = client.post("/v1/score", json=WINDOW)
    assert response.status_code == 200 and response.json()["model_version"] == version


def test_a_damaged_model_file_is_refused_and_the_served_version_stays(
    launch: Callable[..., LiveServer], store: Path, model_file: Path
) -> None:
    add_version(store, model_file)  # version 2, not active
    server = launch(store)
    server.wait_ready()
    with server.client() as client:
        corrupt(store / "models" / "default" / "v0002.lvad")
        refused = client.post(ACTIVATE_2, headers=AUTH)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_artifact"
        assert "corrupted" in refused.json()["message"]
        assert_serves(client, 1)
        assert metric(client, "lvad_model_load_failures_total") == 1

        (store / "models" / "default" / "v0002.lvad").unlink()
        missing = client.post(ACTIVATE_2, headers=AUTH)
        assert missing.status_code == 422 and "not found" in missing.json()["message"]
        assert_serves(client, 1)
        assert metric(client, "lvad_model_load_failures_total") == 2
    server.stop()
    log = server.log_path.read_text()
    assert log.count("model 'default' version 2 cannot be loaded") == 2, log[-3000:]

    # the active version's file truncated while the server was down
    version = add_version(store, model_file, active=True)  # 3
    artifact = store / "models" / "default" / f"v{version:04d}.lvad"
    artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    restarted = launch(store)
    restarted.wait_ready()
    with restarted.client() as client:
        assert_serves(client, 1)  # the newest version that loads
        assert metric(client, "lvad_model_load_failures_total") == 2  # versions 3 and 2
        versions = client.get("/v1/models/default").json()["versions"]
        assert [v["version"] for v in versions] == [3, 2, 1]
    log = restarted.log_path.read_text()
    assert "model 'default' version 3 cannot be loaded" in log
    assert "truncated or corrupted" in log
    assert "serving model 'default' version 1 instead of 3" in log


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: int) -> Iterator[None]:
    """``folder`` as a tmpfs of ``size`` bytes (needs root); skips the test where not
    allowed, except in CI (CI=true), which runs as root: there it fails."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}"
        missing_component(message)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_while_saving_fails_the_job_and_registers_nothing(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path
) -> None:
    with tiny_tmpfs(store / "tmp", TMPFS_BYTES):  # where jobs write their model files
        server = launch(store, LVAD_DATA_DIR=str(data_dir))
        server.wait_ready()
        with server.client() as client:
            job_id = submit_job(client, TINY_PARAMS, path="metrics.csv")["id"]

            def finished() -> bool:
                return client.get(f"/v1/jobs/{job_id}").json()["state"] not in ("queued", "running")

            wait_until(finished, 180, f"job {job_id} finished", interval=0.5)
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["state"] == "failed", job
            assert "No space left on device" in job["error"], job["error"]
            assert job["model_version"] is None and len(job["history"]) == TINY_PARAMS["epochs"]
            versions = client.get("/v1/models/default").json()["versions"]
            assert [v["version"] for v in versions] == [1]
            assert_serves(client, 1)
            assert sorted((store / "tmp").iterdir()) == []  # no half-written file left
        assert [p.name for p in (store / "models" / "default").iterdir()] == ["v0001.lvad"]
        server.stop()


def test_a_full_disk_during_an_upload_is_507_and_keeps_nothing(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path
) -> None:
    upload = (data_dir / "metrics.csv").read_bytes()  # ~250 kB
    assert len(upload) > 4 * TMPFS_BYTES
    with tiny_tmpfs(store / "jobs", 4 * TMPFS_BYTES):  # where uploads are written
        server = launch(store)
        server.wait_ready()
        with server.client() as client:
            form = {"file": ("metrics.csv", upload, "text/csv"), "params": (None, "{}")}
            response = client.post("/v1/jobs", files=form, headers=AUTH)
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["error"] == "insufficient_storage" and "no space left" in body["message"]
            assert str(store) not in body["message"]
            assert client.get("/v1/jobs").json() == []
            assert_serves(client, 1)
        assert list((store / "jobs").iterdir()) == []  # nothing half-written stays
        server.stop()
