"""Named models and their versions, retraining jobs and the API key rules, through the real
app."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.main import create_app
from tests.app.conftest import AUTH, make_settings, seeded_store
from tests.conftest import FEATURES, make_synthetic

FAST = '{"window": 16, "hidden_size": 16, "latent_dim": 4, "epochs": 2}'


def training_csv(path, rows: int = 600, seed: int = 1):
    data = make_synthetic(seed=seed, n_train=rows, n_test=16).train
    pd.DataFrame(data, columns=FEATURES).to_csv(path, index=False)
    return path


def wait_for_job(client, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def upload(client, path, params=FAST, headers=AUTH):
    with open(path, "rb") as handle:
        return client.post(
            "/v1/jobs",
            files={"file": (path.name, handle, "text/csv")},
            data={"params": params},
            headers=headers,
        )


def versions(client, name: str = "default") -> dict[int, dict]:
    return {v["version"]: v for v in client.get(f"/v1/models/{name}").json()["versions"]}


def test_models_list_and_detail(client):
    (model,) = client.get("/v1/models").json()
    assert (model["name"], model["active_version"], model["versions"]) == ("default", 1, 1)
    assert model["feature_names"] == FEATURES and model["window"] == 16 and model["loaded"]
    listed = client.get("/v1/models/default").json()
    assert listed["active_version"] == 1 and [v["version"] for v in listed["versions"]] == [1]
    detail = client.get("/v1/models/default/versions/1").json()
    assert detail["name"] == "default" and detail["active"]
    assert detail["config"]["window"] == 16
    assert detail["threshold_detail"]["method"] in ("pot", "quantile")
    assert "history" in detail["metadata"]
    window = {"windows": [[[0.0] * 4] * 16]}
    for missing in ("/v1/models/default/versions/99", "/v1/models/nope", "/v1/models/nope/score"):
        score = missing.endswith("score")
        response = client.request("POST" if score else "GET", missing, json=window)
        assert response.status_code == 404 and response.json()["error"] == "not_found", missing
    bad = client.get("/v1/models/Bad%20Name")
    assert bad.status_code == 422 and bad.json()["field"] == "path.name"


def test_mutations_need_the_key(client, tmp_path):
    csv = training_csv(tmp_path / "train.csv")
    assert upload(client, csv, headers={}).status_code == 401
    assert upload(client, csv, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/models/default/versions/1/activate").status_code == 401
    assert client.delete("/v1/jobs/abc").status_code == 401
    # reads are open by default
    assert client.get("/v1/models").status_code == 200


def test_no_configured_key_means_no_mutations(tmp_path, model_file):
    settings = make_settings(tmp_path, api_key=None)
    seeded_store(settings.store, model_file)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        response = client.post("/v1/models/default/versions/1/activate", headers=AUTH)
        assert response.status_code == 403 and "LVAD_API_KEY" in response.json()["message"]


def test_reads_can_require_the_key(tmp_path, model_file):
    settings = make_settings(tmp_path, auth_reads=True)
    seeded_store(settings.store, model_file)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=AUTH).status_code == 200
        window = {"windows": [[[0.0, 1.0, 5.0, 100.0]] * 16]}
        assert client.post("/v1/score", json=window).status_code == 401
        assert client.get("/healthz").status_code == 200  # probes never need the key


def test_upload_job_trains_registers_and_promotes(client, tmp_path):
    response = upload(client, training_csv(tmp_path / "train.csv"))
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    job = wait_for_job(client, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert len(job["history"]) == 2 and job["progress"] == 1
    assert job["model_version"] == 2 and job["model"] == "default"
    assert job["promoted"] in (True, False) and job["promotion_note"]
    models = versions(client)
    assert set(models) == {1, 2}
    active = 2 if job["promoted"] else 1
    assert models[active]["active"]
    assert client.get("/readyz").json()["model_version"] == active
    assert any(j["id"] == job_id for j in client.get("/v1/jobs").json())


def test_activate_and_roll_back(client, tmp_path):
    job = wait_for_job(client, upload(client, training_csv(tmp_path / "t.csv")).json()["id"])
    assert job["state"] == "succeeded"
    window = {"windows": [np.zeros((16, 4)).tolist()]}
    for version in (2, 1, 2):
        path = f"/v1/models/default/versions/{version}/activate"
        response = client.post(path, headers=AUTH)
        assert response.status_code == 200 and response.json()["active"]
        assert client.post("/v1/score", json=window).json()["model_version"] == version
    missing = client.post("/v1/models/default/versions/7/activate", headers=AUTH)
    assert missing.status_code == 404


def test_bad_uploads_are_refused_at_once(client, tmp_path):
    text = tmp_path / "text.csv"
    text.write_text("a,b\nx,1\ny,2\n")
    response = upload(client, text)
    assert response.status_code == 422 and "'a'" in response.json()["message"]
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01garbage")
    assert upload(client, garbage).status_code == 422
    exe = tmp_path / "model.exe"
    exe.write_bytes(b"MZ")
    assert "expected one of" in upload(client, exe).json()["message"]
    good = training_csv(tmp_path / "train.csv")
    assert upload(client, good, params='{"windw": 3}').json()["field"] == "windw"
    assert upload(client, good, params="[1, 2]").status_code == 422
    assert client.get("/v1/jobs").json() == []  # nothing was queued


def test_jobs_from_the_data_directory(client, app_settings):
    data_dir = app_settings.data_dir
    training_csv(data_dir / "metrics.csv")
    outside = app_settings.store.parent / "secret.csv"
    training_csv(outside)
    (data_dir / "link.csv").symlink_to(outside)
    ok = client.post("/v1/jobs", data={"path": "metrics.csv", "params": FAST}, headers=AUTH)
    assert ok.status_code == 202 and ok.json()["source"] == "path:metrics.csv"
    for escape in ("../secret.csv", "link.csv", str(outside)):
        refused = client.post("/v1/jobs", data={"path": escape}, headers=AUTH)
        assert refused.status_code == 403, escape
    assert client.post("/v1/jobs", data={"path": "nope.csv"}, headers=AUTH).status_code == 422
    neither = client.post("/v1/jobs", data={"params": FAST}, headers=AUTH)
    assert neither.status_code == 422 and "exactly one" in neither.json()["message"]
    client.delete(f"/v1/jobs/{ok.json()['id']}", headers=AUTH)


def test_cancel_queued_and_running_jobs(client, tmp_path):
    slow = '{"window": 16, "hidden_size": 16, "epochs": 500, "patience": 500}'
    csv = training_csv(tmp_path / "train.csv", rows=2000)
    first = upload(client, csv, params=slow).json()["id"]
    second = upload(client, csv, params=slow).json()["id"]
    queued = client.delete(f"/v1/jobs/{second}", headers=AUTH)
    assert queued.status_code == 200 and queued.json()["state"] == "cancelled"
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{first}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    running = client.delete(f"/v1/jobs/{first}", headers=AUTH)
    assert running.status_code == 200 and running.json()["state"] == "cancelled"
    again = client.delete(f"/v1/jobs/{first}", headers=AUTH)
    assert again.status_code == 409
    assert client.get("/v1/jobs/unknown").status_code == 404
    assert list(versions(client)) == [1]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_openapi_is_served(client, path):
    assert client.get(path).status_code == 200
