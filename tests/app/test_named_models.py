"""Two named models with different variables in one live ``lvad serve``: trained, scored,
activated and rolled back independently, unloaded and reloaded past the memory limit,
and the same after a restart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from tests.app.live import AUTH, TINY_PARAMS, LiveServer, score, submit_job, wait_for_job

MODELS = {"db": ["connections", "qps", "lag_ms"], "api": ["latency_ms", "errors"]}
PARAMS = {**TINY_PARAMS, "epochs": 2}


def write_csv(path: Path, variables: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(600)
    columns = {
        name: np.sin(2 * np.pi * t / (20 + 7 * i)) * (i + 1) + 0.1 * rng.standard_normal(600)
        for i, name in enumerate(variables)
    }
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def windows_of(path: Path, count: int = 4) -> np.ndarray:
    values = pd.read_csv(path).to_numpy()  # (600, D)
    return np.stack([values[i * 40 : i * 40 + 16] for i in range(count)])  # (count, 16, D)


def loaded_versions(client) -> dict[str, str]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    info = next(f for f in families if f.name == "lvad_model_info")
    return {s.labels["model"]: s.labels["version"] for s in info.samples if s.value == 1}


def train_two_versions_each(client, data: dict[str, Path]) -> None:
    for round_ in (1, 2):
        jobs = {
            name: submit_job(client, {**PARAMS, "seed": round_}, upload=path, model=name)["id"]
            for name, path in data.items()
        }
        for name, job_id in jobs.items():
            done = wait_for_job(client, job_id, lambda j: j["state"] == "succeeded", "trained")
            assert (done["model"], done["model_version"]) == (name, round_)


def test_two_models_live_side_by_side_and_survive_a_restart(
    launch: Callable[..., LiveServer], tmp_path: Path
) -> None:
    data = {name: write_csv(tmp_path / f"{name}.csv", cols, i) for i, (name, cols) in
            enumerate(MODELS.items())}  # fmt: skip
    env = {"LVAD_PROMOTION": "always", "LVAD_MAX_CONCURRENT_JOBS": "2",
           "LVAD_MAX_LOADED_MODELS": "1"}  # fmt: skip
    server = launch(tmp_path / "store", **env)
    server.wait_live()
    with server.client() as client:
        assert client.get("/readyz").status_code == 503  # nothing trained yet
        train_two_versions_each(client, data)
        listed = {m["name"]: m for m in client.get("/v1/models").json()}
        assert set(listed) == set(MODELS)
        for name, variables in MODELS.items():
            assert listed[name]["feature_names"] == variables
            assert (listed[name]["active_version"], listed[name]["versions"]) == (2, 2)

        # each model scores its own variables; the other's are refused
        for name, variables in MODELS.items():
            answer = score(client, windows_of(data[name]), variables, model=name)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["model"], body["model_version"], body["variables"]) == (name, 2, variables)
        wrong = score(client, windows_of(data["db"]), MODELS["db"], model="api")
        assert wrong.status_code == 422 and wrong.json()["error"] == "feature_mismatch"
        # one model in memory at a time: each request above loaded its own
        assert len(loaded_versions(client)) == 1
        unknown = score(client, windows_of(data["db"]), MODELS["db"], model="cache")
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
        default = client.post("/v1/score", json={"windows": windows_of(data["db"]).tolist()})
        assert default.status_code == 404  # no model is named `default` here

        # rolling db back leaves api where it is
        rolled = client.post("/v1/models/db/versions/1/activate", headers=AUTH)
        assert rolled.status_code == 200 and rolled.json()["active"]
        assert (
            score(client, windows_of(data["db"]), MODELS["db"], "db").json()["model_version"] == 1
        )
        assert (
            score(client, windows_of(data["api"]), MODELS["api"], "api").json()["model_version"]
            == 2
        )
        before = {name: client.get(f"/v1/models/{name}").json() for name in MODELS}
    server.stop()

    restarted = launch(tmp_path / "store", **env)
    restarted.wait_ready()
    with restarted.client() as client:
        assert {name: client.get(f"/v1/models/{name}").json() for name in MODELS} == before
        for name, version in (("db", 1), ("api", 2), ("db", 1)):
            body = score(client, windows_of(data[name]), MODELS[name], name).json()
            assert (body["model"], body["model_version"]) == (name, version)
            assert loaded_versions(client) == {name: str(version)}
