"""Regression tests for what fuzzing and hostile input found (docs/reliability.md)."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.main import create_app
from model.data import prepare_frame
from model.errors import DataError
from tests.app.conftest import AUTH, make_settings, seeded_store
from tests.conftest import FEATURES

READS = [
    ("/v1/score", "post"),
    ("/v1/sample", "get"),
    ("/v1/sample", "post"),
    ("/v1/jobs", "get"),
    ("/v1/jobs/{job_id}", "get"),
    ("/v1/models", "get"),
    ("/v1/models/{name}", "get"),
    ("/v1/models/{name}/versions/{version}", "get"),
    ("/v1/models/{name}/score", "post"),
    ("/v1/models/{name}/sample", "get"),
    ("/v1/models/{name}/sample", "post"),
]
WRITES = [
    ("/v1/jobs", "post"),
    ("/v1/jobs/{job_id}", "delete"),
    ("/v1/models/{name}/versions/{version}/activate", "post"),
]


def operations(schema: dict) -> dict[tuple[str, str], dict]:
    return {
        (path, method): op for path, ops in schema["paths"].items() for method, op in ops.items()
    }


def test_bodies_that_do_not_parse_are_documented_400s(client):
    ops = operations(client.get("/openapi.json").json())
    for key in [("/v1/score", "post"), ("/v1/sample", "post"), ("/v1/jobs", "post")]:
        assert {"400", "413", "422"} <= set(ops[key]["responses"]), key
    for path in ("/v1/score", "/v1/sample"):
        for content in (b"\xff\xfe", b'{"windows": [', b"[" * 100_000):
            response = client.post(
                path, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, (path, content[:10], response.text)
            assert response.json()["error"] == "http_400"
            assert "not valid JSON" in response.json()["message"]


def test_the_schema_asks_for_the_key_only_where_the_server_does(tmp_path, model_file, client):
    ops = operations(client.get("/openapi.json").json())
    assert [key for key in READS if ops[key].get("security")] == []  # reads are open
    assert all(ops[key].get("security") for key in WRITES)
    assert client.get("/v1/models").status_code == 200

    (tmp_path / "reads").mkdir()
    settings = make_settings(tmp_path / "reads", auth_reads=True)
    seeded_store(settings.store, model_file)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as guarded:
        for page in ("/openapi.json", "/docs", "/redoc"):  # the schema is a read too
            assert guarded.get(page).status_code == 401, page
            assert guarded.get(page, headers=AUTH).status_code == 200, page
        ops = operations(guarded.get("/openapi.json", headers=AUTH).json())
        assert all(ops[key].get("security") for key in READS + WRITES)
        assert guarded.get("/v1/models").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/jobs", "GET, POST"),
        ("OPTIONS", "/v1/sample", "GET, POST"),
        ("PATCH", "/v1/jobs/abc", "DELETE, GET"),
        ("DELETE", "/v1/score", "POST"),
    ],
)
def test_405_names_every_method_of_the_path(client, method, path, allowed):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"] == "http_405"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("metrics.csv\x00.txt", 422),  # ValueError: embedded null byte
        ("a" * 300, 422),  # ENAMETOOLONG
        ("/".join(["b" * 200] * 30), 422),  # a path longer than PATH_MAX
        ("../" * 40 + "etc/passwd", 403),
    ],
)
def test_unusable_data_paths_are_client_errors(client, path, status):
    response = client.post("/v1/jobs", data={"path": path}, headers=AUTH)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == "path" and len(body["message"]) < 300
    assert client.get("/v1/jobs").json() == []


@pytest.mark.parametrize(
    "first", ["0001-01-01T00:00:00Z", "1000-06-01T00:00:00Z", "9999-12-31T00:00:00Z"]
)
def test_timestamps_outside_the_datetime64_range_are_422(client, synthetic, first):
    values = synthetic.test[:20]
    stamps = [first] + [f"2024-01-01T00:{i:02d}:00Z" for i in range(1, 20)]
    series = {
        "timestamps": stamps,
        "variables": {n: values[:, i].tolist() for i, n in enumerate(FEATURES)},
    }
    response = client.post("/v1/score", json={"series": series})
    assert response.status_code == 422, response.text
    assert "times must lie between" in response.json()["message"]
    assert client.get("/readyz").status_code == 200


def test_out_of_range_epoch_seconds_are_a_data_error():
    frame = pd.DataFrame({"timestamp": [-1e12, 1e12], "x": [1.0, 2.0]})
    with pytest.raises(DataError, match="times must lie between") as error:
        prepare_frame(frame)
    assert error.value.field == "timestamp"


def test_bodies_over_the_limit_get_the_json_error_body(tmp_path, model_file):
    settings = make_settings(tmp_path, max_body_bytes=20_000)
    seeded_store(settings.store, model_file)
    body = b'{"windows": [[[0, 1, 5, 100]]], "padding": "' + b"x" * 30_000 + b'"}'

    def chunks():  # no Content-Length: the limit trips while the body is read
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    with TestClient(create_app(settings, registry=CollectorRegistry())) as client:
        for content in (body, chunks()):
            response = client.post(
                "/v1/score", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/json"
            assert (
                response.json()["error"] == "http_413"
                and "20000 bytes" in response.json()["message"]
            )
        upload = {"file": ("big.csv", b"1\n" * 20_000, "text/csv")}
        assert client.post("/v1/jobs", files=upload, headers=AUTH).status_code == 413
        assert client.get("/v1/jobs").json() == []


def test_lvad_serve_caps_malloc_arenas_unless_told_otherwise(monkeypatch):
    """The load test's resident memory crept up 11 % over five runs with glibc's
    default arenas (one per busy thread), 3.5 % with two (docs/reliability.md)."""
    from app.ops.malloc import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True  # glibc (Debian, the image)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
