"""GET /v1/sample (prior) and POST /v1/sample (posterior), JSON and CSV."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from tests.conftest import FEATURES


def test_prior_samples_in_original_units(client, synthetic):
    body = client.get("/v1/sample", params={"n": 3, "seed": 7}).json()
    samples = np.asarray(body["samples"])
    assert samples.shape == (3, 16, 4)
    assert body["variables"] == FEATURES and body["source"] == "prior"
    # delta lives around 100 in the training data: samples are denormalized
    assert abs(samples[..., 3].mean() - synthetic.train[:, 3].mean()) < 15


def test_same_seed_same_samples(client):
    first = client.get("/v1/sample", params={"n": 2, "seed": 5}).json()["samples"]
    again = client.get("/v1/sample", params={"n": 2, "seed": 5}).json()["samples"]
    other = client.get("/v1/sample", params={"n": 2, "seed": 6}).json()["samples"]
    assert first == again and first != other


def test_csv_when_asked(client):
    response = client.get("/v1/sample", params={"n": 2}, headers={"Accept": "text/csv"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-model-version"] == "1"
    frame = pd.read_csv(io.StringIO(response.text))
    assert list(frame.columns) == ["sample", "step", *FEATURES]
    assert len(frame) == 32


def test_posterior_samples_stay_near_the_window(client, synthetic):
    window = synthetic.test[:16]
    body = client.post("/v1/sample", json={"window": window.tolist(), "n": 4, "noise": False})
    assert body.status_code == 200
    samples = np.asarray(body.json()["samples"])
    assert samples.shape == (4, 16, 4) and body.json()["source"] == "posterior"
    near = np.abs(samples.mean(axis=0) - window).mean()
    far = np.abs(
        np.asarray(
            client.get("/v1/sample", params={"n": 4, "noise": False}).json()["samples"]
        ).mean(axis=0)
        - window
    ).mean()
    assert near < far


def test_sample_refusals(client, synthetic):
    assert client.get("/v1/sample", params={"n": 0}).status_code == 422
    assert client.get("/v1/sample", params={"n": 100000}).status_code == 422
    assert client.get("/v1/sample", params={"seed": -1}).status_code == 422
    short = client.post("/v1/sample", json={"window": synthetic.test[:5].tolist()})
    assert short.status_code == 422 and "needs 16" in short.json()["message"]
    ragged = client.post("/v1/sample", json={"window": [[1.0, 2.0, 3.0, 4.0]] * 15 + [[1.0]]})
    assert ragged.status_code == 422 and "ragged" in ragged.json()["message"]
