"""Security of a real ``lvad serve``: the key, the data directory, uploads, unpickling.

The key rules in-process (401 without or with a wrong key, 403 with none
configured) and the basic escapes from the data directory (``..``, an absolute
path, a symlinked file) are in tests/app/test_models_jobs_api.py.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from model.detector import Detector
from model.errors import ArtifactError
from tests.app.live import LiveServer
from tests.conftest import FEATURES, make_synthetic

ROOT = Path(__file__).resolve().parents[2]
ACTIVATE = "/v1/models/default/versions/1/activate"
MUTATIONS = [("POST", ACTIVATE), ("DELETE", "/v1/jobs/abc"), ("POST", "/v1/jobs")]


class Marker:
    """Unpickling this creates ``path`` (it calls ``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def key() -> str:
    return "k-" + secrets.token_hex(16)


def test_mutations_refuse_missing_and_wrong_keys_and_no_key_is_ever_logged(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path, key: str
) -> None:
    wrong = "w-" + secrets.token_hex(16)
    server = launch(store, LVAD_API_KEY=key, LVAD_LOG_LEVEL="debug", LVAD_DATA_DIR=str(data_dir))
    server.wait_ready()
    refusals = []
    with server.client() as client:
        for method, path in MUTATIONS:
            for value in (None, f"Bearer {wrong}", f"Basic {key}", f"Bearer {key[:-1]}", key):
                header = {} if value is None else {"Authorization": value}
                response = client.request(method, path, headers=header)
                refusals.append((method, path, response.status_code, response.json()["error"]))
        good = {"Authorization": f"Bearer {key}"}
        assert client.post(ACTIVATE, headers=good).status_code == 200
        form = {"path": (None, "metrics.csv"), "params": (None, '{"epochs": 1000}')}
        job = client.post("/v1/jobs", headers=good, files=form).json()
        assert client.delete(f"/v1/jobs/{job['id']}", headers=good).status_code == 200
        texts = [
            client.get(p).text for p in ("/metrics", "/v1/jobs", "/v1/models", "/openapi.json")
        ]
    assert {(status, error) for *_, status, error in refusals} == {(401, "unauthorized")}
    server.stop()
    logged = server.log_path.read_text()
    assert f"POST {ACTIVATE}" in logged  # the log has the requests, not the keys
    stored = b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    for secret in (key, wrong, key[:-1]):
        assert secret not in logged and all(secret not in text for text in texts)
        assert secret.encode() not in stored


def test_uploads_and_paths_cannot_leave_their_directories(
    launch: Callable[..., LiveServer], store: Path, data_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    pd.DataFrame(make_synthetic(n_train=300).train, columns=FEATURES).to_csv(
        outside / "secret.csv", index=False
    )
    (data_dir / "linked").symlink_to(outside, target_is_directory=True)
    (data_dir / "loop").symlink_to(data_dir / "loop")
    server = launch(store, LVAD_DATA_DIR=str(data_dir))
    server.wait_ready()
    auth = {"Authorization": "Bearer test-key"}
    with server.client() as client:
        for path, status in [
            ("linked/secret.csv", 403),  # a symlinked directory pointing outside
            ("linked/../linked/secret.csv", 403),
            ("./../outside/secret.csv", 403),
            ("%2e%2e/outside/secret.csv", 422),  # not decoded: no such file
            ("loop", 422),  # a symlink loop
            ("", 422),
        ]:
            response = client.post("/v1/jobs", headers=auth, files={"path": (None, path)})
            assert response.status_code == status, (path, response.text)
            assert str(tmp_path) not in response.text  # no server directories in messages

        csv = (outside / "secret.csv").read_bytes()
        form = {"file": ("../../../../escape.csv", csv, "text/csv"), "params": (None, "{}")}
        accepted = client.post("/v1/jobs", headers=auth, files=form)
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["source"] == "upload:escape.csv"
        assert client.delete(f"/v1/jobs/{job['id']}", headers=auth).status_code == 200
        assert client.get("/v1/jobs").json()[0]["state"] == "cancelled"
    assert list(tmp_path.rglob("escape.csv")) == []
    assert (store / "jobs" / job["id"] / "data.csv").read_bytes() == csv


def test_nothing_is_unpickled_from_a_model_file_or_an_upload(
    tmp_path: Path, launch: Callable[..., LiveServer], store: Path
) -> None:
    marker = tmp_path / "unpickled"
    payloads = {
        "pickle.lvad": pickle.dumps(Marker(marker)),
        "torch-save.lvad": None,  # torch.save's zip-of-pickles
    }
    torch.save({"weights": Marker(marker)}, tmp_path / "torch-save.lvad")
    for name, payload in payloads.items():
        if payload is not None:
            (tmp_path / name).write_bytes(payload)
        with pytest.raises(ArtifactError):
            Detector.load(tmp_path / name)
    server = launch(store)
    server.wait_ready()
    with server.client() as client:
        for name in ("data.csv", "data.parquet", "data.pkl"):
            files = {"file": (name, pickle.dumps(Marker(marker)), "application/octet-stream")}
            refused = client.post(
                "/v1/jobs", files=files, headers={"Authorization": "Bearer test-key"}
            )
            assert refused.status_code == 422, refused.text
    assert not marker.exists()


def test_the_code_has_no_way_to_unpickle() -> None:
    """No pickle, joblib, dill, torch.load, pandas.read_pickle or np.load(allow_pickle)."""
    pattern = re.compile(
        r"\bimport (c?pickle|joblib|dill|shelve)\b|torch\.load\(|read_pickle\(|allow_pickle=True"
    )
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("app", "model")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_the_container_runs_as_non_root_on_a_read_only_root_file_system() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\S+)", final_stage, flags=re.M)[1]
    assert user == "10001:10001"
    detector = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["detector"]
    assert detector["read_only"] is True and detector["tmpfs"] == ["/tmp"]
    assert detector["cap_drop"] == ["ALL"] and "no-new-privileges:true" in detector["security_opt"]
    assert os.path.basename(detector["volumes"][0].split(":")[1]) == "store"
