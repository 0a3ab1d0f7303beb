"""Reading Prometheus: ``/api/v1/query_range`` through httpx, retried with tenacity.

Any server with Prometheus's HTTP API will do (Prometheus, VictoriaMetrics, Thanos,
Mimir). A range longer than Prometheus's 11,000 points per series is cut into
queries of at most that many points and the pieces joined. Connection failures,
timeouts and 5xx / 429 answers are retried with exponential backoff and jitter;
a 4xx answer (a bad query) is not. A failure ends as ``PrometheusError`` with one
of ``ERROR_REASONS``, the label values of ``lvad_detector_errors_total``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from app.pull.detectors_file import PrometheusSource
from model.errors import LvadError

ERROR_REASONS = ("unreachable", "timeout", "unauthorized", "bad_query", "bad_response",
                 "server_error")  # fmt: skip
MAX_POINTS = 11_000  # Prometheus refuses a range query of more points per series
MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # one answer larger than this is refused unread


class PrometheusError(LvadError):
    """A query failed; ``reason`` is one of ERROR_REASONS."""

    status_code = 502
    code = "prometheus_error"

    def __init__(self, message: str, reason: str, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]  # every label of the series, __name__ included if it has one
    times: np.ndarray  # (k,) float64 Unix seconds, increasing
    values: np.ndarray  # (k,) float64


@dataclass
class ReadStats:
    """What the reader asked of Prometheus (the query load, docs/pull.md)."""

    requests: int = 0  # HTTP requests answered
    failed: int = 0  # attempts that failed (each retry counts)
    bytes: int = 0  # answer bodies, bytes
    points: int = 0  # points in the answers


def range_chunks(start: float, end: float, step: float, max_points: int = MAX_POINTS):
    """[(start, end)] pieces of the grid start, start + step, ..., end of at most
    ``max_points`` points each, consecutive and not overlapping."""
    total = int(round((end - start) / step)) + 1
    return [
        (start + first * step, start + (min(first + max_points, total) - 1) * step)
        for first in range(0, total, max_points)
    ]


class FileBearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` with the token read from a file at each request."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {read_secret(self.path)}"
        yield request


class FileBasicAuth(httpx.Auth):
    """Basic authentication with the password read from a file at each request."""

    def __init__(self, username: str, path: Path) -> None:
        self.username, self.path = username, path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        yield from httpx.BasicAuth(self.username, read_secret(self.path)).auth_flow(request)


def read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PrometheusError(f"cannot read {path}: {exc.strerror}", "unauthorized") from exc


def make_auth(source: PrometheusSource) -> httpx.Auth | None:
    if source.bearer_token_file is not None:
        return FileBearerAuth(source.bearer_token_file)
    basic = source.basic_auth
    if basic is None:
        return None
    if basic.password_file is not None:
        return FileBasicAuth(basic.username, basic.password_file)
    return httpx.BasicAuth(basic.username, basic.password or "")


def make_tls(source: PrometheusSource) -> ssl.SSLContext:
    tls = source.tls
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise LvadError(f"prometheus.tls: cannot load a certificate: {exc}", field="tls") from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def is_transient(error: BaseException) -> bool:
    return isinstance(error, PrometheusError) and error.transient


class PrometheusReader:
    """Range queries against one Prometheus API; safe to share between threads."""

    def __init__(self, source: PrometheusSource, max_points: int = MAX_POINTS) -> None:
        self.source = source
        self.max_points = max_points
        self.stats = ReadStats()
        self._lock = threading.Lock()
        self.client = httpx.Client(
            base_url=source.url,
            headers=source.headers,
            auth=make_auth(source),
            verify=make_tls(source),
            timeout=source.timeout,
        )

    def close(self) -> None:
        self.client.close()

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        """Every series of ``query`` on the grid start..end (Unix seconds) by ``step``,
        the pieces of a long range joined."""
        pieces: dict[tuple, list[Series]] = {}
        for first, last in range_chunks(start, end, step, self.max_points):
            for series in self.query_chunk(query, first, last, step):
                pieces.setdefault(tuple(sorted(series.labels.items())), []).append(series)
        return [
            Series(
                parts[0].labels,
                np.concatenate([p.times for p in parts]),
                np.concatenate([p.values for p in parts]),
            )
            for parts in pieces.values()
        ]

    def query_chunk(self, query: str, start: float, end: float, step: float) -> list[Series]:
        form = {"query": query, "start": repr(start), "end": repr(end), "step": repr(step)}
        retrying = Retrying(
            stop=stop_after_attempt(self.source.attempts),
            wait=wait_exponential_jitter(
                multiplier=0.5, jitter=0.5, max=min(10.0, self.source.timeout)
            ),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        body = retrying(self.post, "/api/v1/query_range", form)
        series = parse_matrix(body)
        with self._lock:
            self.stats.points += sum(len(s.times) for s in series)
        return series

    def post(self, path: str, form: dict[str, str]) -> dict:
        """One POST, its JSON answer's ``data``; PrometheusError classified otherwise."""
        try:
            return self.post_once(path, form)
        except PrometheusError:
            with self._lock:
                self.stats.failed += 1
            raise

    def post_once(self, path: str, form: dict[str, str]) -> dict:
        try:
            with self.client.stream("POST", path, data=form) as response:
                content = read_limited(response)
        except httpx.TimeoutException as exc:
            raise PrometheusError(f"Prometheus timed out: {exc!r}", "timeout", True) from exc
        except httpx.TransportError as exc:
            raise PrometheusError(f"Prometheus unreachable: {exc!r}", "unreachable", True) from exc
        with self._lock:
            self.stats.requests += 1
            self.stats.bytes += len(content)
        return answer_data(response.status_code, content)


def read_limited(response: httpx.Response) -> bytes:
    parts, size = [], 0
    for part in response.iter_bytes():
        size += len(part)
        if size > MAX_RESPONSE_BYTES:
            raise PrometheusError(
                f"answer larger than {MAX_RESPONSE_BYTES} bytes: query fewer series",
                "bad_response",
            )
        parts.append(part)
    return b"".join(parts)


def answer_data(status: int, content: bytes) -> dict:
    """The ``data`` of an API answer, or the PrometheusError its status and body say."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    message = (
        body.get("error", "") if isinstance(body, dict) else content[:200].decode(errors="replace")
    )
    if status in (401, 403):
        raise PrometheusError(f"HTTP {status}: {message}", "unauthorized")
    if status == 429 or status >= 500:
        timeout = isinstance(body, dict) and body.get("errorType") == "timeout"
        reason = "timeout" if timeout else "server_error"
        raise PrometheusError(f"HTTP {status}: {message}", reason, True)
    if status >= 400:
        raise PrometheusError(f"bad query (HTTP {status}): {message}", "bad_query")
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusError(f"not a Prometheus API answer: {message}", "bad_response")
    return body.get("data")


def parse_matrix(data: object) -> list[Series]:
    """A range query's ``data`` as Series; PrometheusError ``bad_response`` otherwise."""
    try:
        if data["resultType"] != "matrix":
            raise ValueError(f"a {data['resultType']} where a range query gives a matrix")
        series = []
        for item in data["result"]:
            pairs = item["values"]
            times = np.fromiter((p[0] for p in pairs), np.float64, len(pairs))
            values = np.fromiter((float(p[1]) for p in pairs), np.float64, len(pairs))
            series.append(Series(dict(item["metric"]), times, values))
        return series
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PrometheusError(f"unexpected range query answer: {exc}", "bad_response") from exc
