"""The Prometheus reader: a real Prometheus for queries and the point limit, a scripted
loopback server for the failures Prometheus cannot be made to produce on demand."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from app.pull.detectors_file import PrometheusSource
from app.pull.reader import MAX_POINTS, PrometheusError, PrometheusReader, range_chunks
from tests.app.live import free_port
from tests.pull.answering_server import Answer, answering_server
from tests.pull.signals import signal_values


def reader_for(url: str, **settings) -> PrometheusReader:
    return PrometheusReader(PrometheusSource(url=url, **{"timeout": "2s", **settings}))


def test_range_chunks_cover_the_grid_within_the_limit():
    step = 15.0
    chunks = range_chunks(0.0, 40319 * step, step)  # fit_window 7d at 15 s: 40,320 points
    assert len(chunks) == 4
    points = [round((b - a) / step) + 1 for a, b in chunks]
    assert max(points) <= MAX_POINTS and sum(points) == 40320
    assert all(b + step == c for (_, b), (c, _) in zip(chunks, chunks[1:], strict=False))
    assert range_chunks(30.0, 30.0, step) == [(30.0, 30.0)]


def test_a_long_range_is_split_joined_and_matches_the_history(prometheus, prometheus_setup):
    end = float(prometheus_setup.history_end)
    start = end - 4 * 3600  # 14,401 points at 1 s: Prometheus refuses that in one query
    reader = reader_for(prometheus.url)
    series = reader.query_range('demo_load{host="a"}', start, end, 1.0)
    assert reader.stats.requests == 2
    assert len(series) == 1
    assert series[0].labels == {"__name__": "demo_load", "host": "a", "job": "demo",
                                "instance": prometheus_setup.targets["demo"]}  # fmt: skip
    times = series[0].times
    assert np.all(np.diff(times) == 1.0), "the pieces join without a gap or an overlap"
    assert len(times) >= 2300  # the 40 minutes of history written by promtool
    np.testing.assert_allclose(series[0].values, signal_values("demo_load", "a", times), atol=1e-5)
    small = reader_for(prometheus.url)
    small.max_points = 1000
    again = small.query_range('demo_load{host="a"}', start, end, 1.0)
    np.testing.assert_array_equal(again[0].values, series[0].values)
    assert small.stats.requests == 15
    unsplit = reader_for(prometheus.url)
    unsplit.max_points = 20_000
    with pytest.raises(PrometheusError) as refused:
        unsplit.query_range('demo_load{host="a"}', start, end, 1.0)
    assert refused.value.reason == "bad_query" and "11,000" in refused.value.message


def test_a_bad_query_is_refused_at_once(prometheus):
    reader = reader_for(prometheus.url, attempts=3)
    with pytest.raises(PrometheusError) as refused:
        reader.query_range("sum(demo_load", time.time() - 60, time.time(), 1.0)
    assert refused.value.reason == "bad_query"
    assert "parse error" in refused.value.message
    assert reader.stats.requests == 1 and reader.stats.failed == 1  # not retried


def test_nothing_listening_is_retried_then_unreachable():
    reader = reader_for(f"http://127.0.0.1:{free_port()}", attempts=3)
    with pytest.raises(PrometheusError) as failed:
        reader.query_range("up", 0.0, 60.0, 15.0)
    assert failed.value.reason == "unreachable"
    assert reader.stats.failed == 3 and reader.stats.requests == 0


def test_server_errors_are_retried_until_an_answer():
    with answering_server(Answer(503, b"overloaded"), Answer(500, b"{}"), Answer()) as (url, log):
        reader = reader_for(url, attempts=3)
        series = reader.query_range("x", 100.0, 101.0, 1.0)
    assert len(log.requests) == 3
    assert series[0].labels == {"host": "a"}
    np.testing.assert_array_equal(series[0].values, [1.5, np.nan])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(503, json.dumps({"status": "error", "errorType": "timeout"}).encode()), "timeout"),
        (Answer(502, b"bad gateway"), "server_error"),
        (Answer(200, b"<html>not the API</html>"), "bad_response"),
        (
            Answer(
                200,
                json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": []}}
                ).encode(),
            ),
            "bad_response",
        ),  # fmt: skip
        (Answer(401, b"who are you"), "unauthorized"),
        (Answer(200, delay=1.5), "timeout"),
    ],
)
def test_failures_are_classified(answer, reason):
    with answering_server(answer) as (url, log):
        reader = reader_for(url, attempts=2, timeout="500ms")
        with pytest.raises(PrometheusError) as failed:
            reader.query_range("x", 100.0, 101.0, 1.0)
    assert failed.value.reason == reason
    retried = reason in ("timeout", "server_error")
    assert len(log.requests) == (2 if retried else 1)


def test_credentials_and_headers_are_sent(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with answering_server(Answer()) as (url, log):
        reader_for(url, bearer_token_file=token, headers={"X-Scope-OrgID": "team"}).query_range(
            "x", 100.0, 101.0, 1.0
        )
        token.write_text("rotated")
        reader_for(url, bearer_token_file=token).query_range("x", 100.0, 101.0, 1.0)
        password = tmp_path / "password"
        password.write_text("pw")
        basic = {"username": "lvad", "password_file": password}
        reader_for(url, basic_auth=basic).query_range("x", 100.0, 101.0, 1.0)
    first, rotated, basic_request = log.requests
    assert first["Authorization"] == "Bearer s3cret" and first["X-Scope-OrgID"] == "team"
    assert rotated["Authorization"] == "Bearer rotated"
    assert basic_request["Authorization"] == "Basic bHZhZDpwdw=="  # lvad:pw


def test_an_unreadable_token_file_is_unauthorized(tmp_path):
    with answering_server(Answer()) as (url, log):
        reader = reader_for(url, bearer_token_file=tmp_path / "missing")
        with pytest.raises(PrometheusError) as failed:
            reader.query_range("x", 100.0, 101.0, 1.0)
    assert failed.value.reason == "unauthorized" and log.requests == []


def test_a_missing_ca_file_is_refused_when_the_reader_is_made(tmp_path):
    source = PrometheusSource(url="https://127.0.0.1:1", tls={"ca_file": tmp_path / "ca.pem"})
    with pytest.raises(Exception, match="certificate"):
        PrometheusReader(source)
