"""Hand-written hostile input against a real ``lvad serve``: each gets a clear 4xx.

One server (small body limit, a data directory) answers every case; afterwards it
must still be live and ready, have queued no job, kept no upload, and logged no
traceback. The 10^6-point series are cheap to refuse: the limit and the variable
check come before any model work.
"""

from __future__ import annotations

import io
import json
import os

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.app.conftest import AUTH, seeded_store
from tests.conftest import FEATURES
from tests.reliability.conftest import serve_store

BODY_LIMIT = 8 * 1024 * 1024  # LVAD_MAX_BODY_BYTES of the server under test
JSON = {"content-type": "application/json"}
ROWS = "\n".join(f"{i},{i * 0.5},{i % 7},{i % 3}" for i in range(300))
CSV = "alpha,beta,gamma,delta\n" + ROWS + "\n"
STAMPS = [f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00Z" for i in range(40)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_file):
    root = tmp_path_factory.mktemp("hostile")
    seeded_store(root / "store", model_file)
    with serve_store(root, LVAD_MAX_BODY_BYTES=str(BODY_LIMIT)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    with server.client(timeout=120) as http:
        yield http


def series(n: int = 40, stamps: list | None = None, names=FEATURES, value=0.5) -> dict:
    body: dict = {"variables": {name: [value] * n for name in names}}
    if stamps is not None:
        body["timestamps"] = stamps
    return {"series": body}


def raw(text: str | bytes) -> dict:
    return {"content": text, "headers": JSON}


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


GOOD_PARQUET = parquet(pd.DataFrame(np.random.default_rng(0).random((300, 4)), columns=FEATURES))

# name -> (keyword arguments of POST /v1/score, status, error code)
SCORE_CASES = {
    "body over the limit": (raw(b"[" + b"0," * (BODY_LIMIT // 2) + b"0]"), 413, "http_413"),
    "arrays nested 100000 deep": (raw("[" * 100_000 + "]" * 100_000), 400, "http_400"),
    "windows nested 5000 deep": (raw('{"windows":' + "[" * 5000 + "]" * 5000 + "}"), 400, None),
    "not JSON": (raw(b"\xff\xfe\x00garbage"), 400, "http_400"),
    "JSON cut short": (raw(b'{"windows": [[[0, 1'), 400, "http_400"),
    "plain text": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 422, None),
    "NaN literal": (raw('{"windows": [[[NaN, 1, 2, 3]]]}'), 422, "validation_error"),
    "Infinity literal": (raw('{"series": {"variables": {"alpha": [Infinity]}}}'), 422, None),
    "1e999": (raw('{"windows": [[[1e999, 1, 2, 3]]]}'), 422, "validation_error"),
    "a 5000-digit integer": (raw('{"windows": [[[' + "9" * 5000 + ", 1, 2, 3]]]}"), 400, None),
    # the variables are checked first, before anything that grows with the points
    "10^6 + 1 points": ({"json": series(1_000_001, names=["alpha"])}, 422, "feature_mismatch"),
    "10^6 points, one variable": (
        {"json": series(1_000_000, names=["alpha"])},
        422,
        "feature_mismatch",
    ),
    "300 unnamed variables": ({"json": {"windows": [[[0.0] * 300] * 16]}}, 422, "feature_mismatch"),
    "300 named variables": (
        {"json": {"windows": [[[0.0] * 300] * 16], "variables": [f"v{i}" for i in range(300)]}},
        422,
        "feature_mismatch",
    ),
    "300 series variables": ({"json": series(names=[f"v{i}" for i in range(300)])}, 422, None),
    "unicode names": (
        {"json": series(names=["温度🌡", "\u202egamma", "beta\x00", "delta"])},
        422,
        "feature_mismatch",
    ),
    "a 1 MB variable name": ({"json": series(names=["x" * 1_000_000])}, 422, "feature_mismatch"),
    "timestamps out of order": ({"json": series(stamps=STAMPS[::-1])}, 422, "invalid_data"),
    "timestamps duplicated": ({"json": series(stamps=[STAMPS[0]] * 40)}, 422, "invalid_data"),
    "timestamps not times": ({"json": series(stamps=["yesterday"] * 40)}, 422, None),
    "timestamps in year 1": (
        {"json": series(stamps=["0001-01-01T00:00:00Z"] + STAMPS[1:])},
        422,
        "invalid_data",
    ),
    "ragged windows": ({"json": {"windows": [[[0.0] * 4] * 16, [[0.0] * 4] * 17]}}, 422, None),
    "empty window rows": ({"json": {"windows": [[[]] * 16]}}, 422, None),
}

# name -> (file name, content, status, error code) for POST /v1/jobs uploads
UPLOAD_CASES = {
    "upload over the limit": ("big.csv", b"1\n" * (BODY_LIMIT // 2 + 1), 413, "http_413"),
    "empty CSV": ("empty.csv", b"", 422, "invalid_data"),
    "binary garbage CSV": ("garbage.csv", os.urandom(5000), 422, "invalid_data"),
    "CSV cut after the header": ("cut.csv", b"alpha,beta,gamma,delta\n1,2", 422, "invalid_data"),
    "CSV cut inside a quote": ("quote.csv", (CSV[:400] + '\n"12').encode(), 422, "invalid_data"),
    "formula-like cell": (
        "formula.csv",
        ("alpha,beta,gamma,delta\n" + '=HYPERLINK("http://x"),1,2,3\n' + ROWS).encode(),
        422,
        "invalid_data",
    ),
    "1100 variables": (
        "wide.csv",
        (",".join(f"v{i}" for i in range(1100)) + "\n" + ",".join(["1"] * 1100) + "\n").encode(),
        422,
        "limit_exceeded",
    ),
    "empty Parquet": ("empty.parquet", b"", 422, "invalid_data"),
    "truncated Parquet": ("cut.parquet", GOOD_PARQUET[: len(GOOD_PARQUET) // 2], 422, None),
    "garbage Parquet": ("garbage.parquet", os.urandom(3000), 422, "invalid_data"),
    "a pickle as Parquet": ("pickle.parquet", b"\x80\x04\x95" + os.urandom(64), 422, None),
    "unknown suffix": ("model.exe", b"MZ\x90\x00", 422, "invalid_data"),
}


def check_answer(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error"] and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    assert len(response.content) < 20_000  # an answer, not an echo of the input


@pytest.mark.parametrize("name", list(SCORE_CASES))
def test_hostile_score_requests_are_4xx(client, name):
    kwargs, status, code = SCORE_CASES[name]
    check_answer(client.post("/v1/score", **kwargs), status, code)


@pytest.mark.parametrize("name", list(UPLOAD_CASES))
def test_hostile_uploads_are_4xx(client, server, name):
    filename, content, status, code = UPLOAD_CASES[name]
    form = {"file": (filename, content, "application/octet-stream"), "params": (None, "{}")}
    response = client.post("/v1/jobs", files=form, headers=AUTH)
    check_answer(response, status, code)
    assert str(server.log_path.parent) not in response.text  # no server paths in messages


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"--xyz\r\ngarbage", 400), (b"\x00" * 1000, 400)],
    ids=["no boundary", "binary"],
)
def test_broken_multipart_is_400(client, content, status):
    headers = {**AUTH, "content-type": "multipart/form-data"}
    check_answer(client.post("/v1/jobs", content=content, headers=headers), status, None)


def test_the_server_is_unharmed_afterwards(client, server):
    """Runs last in this module: the cases above left nothing behind."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["models"] == {"default": 1}
    window = {"windows": [[[0.0, 1.0, 5.0, 100.0]] * 16]}
    assert client.post("/v1/score", json=window).status_code == 200
    assert client.get("/v1/jobs").json() == []
    store = server.log_path.parent / "store"
    assert list((store / "jobs").iterdir()) == [] and list((store / "tmp").iterdir()) == []
    log = server.log_path.read_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
    print(json.dumps({"score cases": len(SCORE_CASES), "upload cases": len(UPLOAD_CASES)}))
