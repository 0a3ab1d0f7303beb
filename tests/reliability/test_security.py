"""Security of a real ``lvad serve``: the key, the data directory, uploads, unpickling.

The key rules in-process (401 without or with a wrong key, 403 with none
configured) and the basic escapes from the data directory (``..``, an absolute
path, a symlinked file) are in tests/app/test_models_jobs_api.py.
"""

from __future__ import annotations

import ast
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


def test_with_reads_guarded_the_schema_and_its_pages_need_the_key_too(
    launch: Callable[..., LiveServer], store: Path, key: str
) -> None:
    server = launch(store, LVAD_API_KEY=key, LVAD_AUTH_READS="true")
    server.wait_ready()
    good = {"Authorization": f"Bearer {key}"}
    with server.client() as client:
        for page in ("/openapi.json", "/docs", "/redoc", "/v1/models"):
            refused = client.get(page)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", page
            assert client.get(page, headers=good).status_code == 200, page
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/openapi.json", headers=good).json()["paths"]["/v1/score"]


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


UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "joblib", "dill", "shelve", "cloudpickle"}
UNPICKLING_CALLS = {"read_pickle", "load_pickle", "loads_pickle"}


def unpickling_uses(source: str) -> list[str]:
    """What in ``source`` (Python code) can unpickle, read from its syntax tree: imports of
    the pickle family, ``torch.load``, ``read_pickle``, ``allow_pickle=True`` and
    ``weights_only=False``, and ``__import__`` / ``import_module`` of a pickle module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom):
                found += [f"import {name}" for name in names if name in UNPICKLING_CALLS]
                names = [node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.Call):
            found += unpickling_call(node)
    return found


def unpickling_call(call: ast.Call) -> list[str]:
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    owner = getattr(function, "value", None)
    found = []
    if name == "load" and isinstance(owner, ast.Name) and owner.id == "torch":
        found.append("torch.load")
    if name in UNPICKLING_CALLS:
        found.append(name)
    if name in ("__import__", "import_module") and call.args:
        module = call.args[0]
        if isinstance(module, ast.Constant) and str(module.value) in UNPICKLING_MODULES:
            found.append(f"{name}({module.value!r})")
    for keyword in call.keywords:
        value = getattr(keyword.value, "value", None)
        if (keyword.arg, value) in (("allow_pickle", True), ("weights_only", False)):
            found.append(f"{keyword.arg}={value}")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "from joblib import load",
        "import dill as d",
        "from pandas import read_pickle",
        "torch.load(path)",
        "pd.read_pickle(path)",
        "numpy.load(path, allow_pickle=True)",
        "safetensors.torch.load_file(p); torch.load(p, weights_only=False)",
        "__import__('pickle').loads(b'')",
        "importlib.import_module('shelve')",
    ],
)
def test_the_unpickling_check_finds_each_way(source: str) -> None:
    assert unpickling_uses(source)


def test_the_code_has_no_way_to_unpickle() -> None:
    """No module of app/ or model/ imports pickle and its kin or calls an unpickling loader."""
    found = [
        f"{path.relative_to(ROOT)}: {use}"
        for folder in ("app", "model")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for use in unpickling_uses(path.read_text())
    ]
    assert found == []
    assert unpickling_uses("import json; np.load(path)") == []  # the harmless stay harmless


def test_the_container_runs_as_non_root_on_a_read_only_root_file_system() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\S+)", final_stage, flags=re.M)[1]
    assert user == "10001:10001"
    detector = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["detector"]
    assert detector["read_only"] is True and detector["tmpfs"] == ["/tmp"]
    assert detector["cap_drop"] == ["ALL"] and "no-new-privileges:true" in detector["security_opt"]
    assert os.path.basename(detector["volumes"][0].split(":")[1]) == "store"
