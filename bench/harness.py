"""Mechanics of the service benchmark: timed runs, `lvad serve` processes, load.

Nothing here decides what to measure; ``service_bench.py`` does. Every loop is
bounded by a deadline and a count, and every server is started in its own
process group on 127.0.0.1 and killed with that group.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

WRK_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "reliability" / "wrk_report.lua"
REQUEST_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 90.0
SERVER_SAMPLES = (  # /metrics samples whose deltas describe a run
    "lvad_batch_windows_sum",
    "lvad_batch_windows_count",
    "lvad_inference_duration_seconds_sum",
)


@dataclass
class Run:
    """One measured run: requests (or model calls) of ``size`` windows each."""

    size: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds per completed request
    errors: int = 0
    first_error: str = ""
    client_cpu: float = 0.0  # CPU seconds of this (load generating) process
    server_cpu: float | None = None  # CPU seconds of the server process and its children
    server_own_cpu: float | None = None  # of it, the server's own process (no scoring child)
    server: dict[str, float] = field(default_factory=dict)  # deltas of SERVER_SAMPLES

    counted: int | None = None  # completed requests when not one latency each (wrk)

    @property
    def requests(self) -> int:
        return len(self.latencies) if self.counted is None else self.counted

    @property
    def windows(self) -> int:
        return self.requests * self.size

    def merge(self, other: Run) -> None:
        if self.counted is not None or other.counted is not None:
            self.counted = self.requests + other.requests
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.client_cpu += other.client_cpu
        if other.server_cpu is not None:
            self.server_cpu = (self.server_cpu or 0.0) + other.server_cpu
        if other.server_own_cpu is not None:
            self.server_own_cpu = (self.server_own_cpu or 0.0) + other.server_own_cpu
        for name, value in other.server.items():
            self.server[name] = self.server.get(name, 0.0) + value


def time_calls(call: Callable[[], object], size: int, seconds: float, max_calls: int) -> Run:
    """Call ``call`` (which scores ``size`` windows) until ``seconds`` pass or ``max_calls``."""
    run = Run(size)
    cpu, started = time.process_time(), time.perf_counter()
    deadline = started + seconds
    while len(run.latencies) < max_calls and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        call()
        run.latencies.append(time.perf_counter() - t0)
    run.seconds = time.perf_counter() - started
    run.client_cpu = time.process_time() - cpu
    return run


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (started by any of its threads)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:  # the thread ended
            continue
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all threads; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields_ = stat.rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and its children (the scoring
        process), all threads (from /proc); a child that has exited no longer counts."""
        pids = [self.process.pid, *child_pids(self.process.pid)]
        return sum(process_cpu_seconds(pid) for pid in pids)

    def own_cpu_seconds(self) -> float:
        """User + system CPU of the server's own process (parsing, responses, HTTP)."""
        return process_cpu_seconds(self.process.pid)

    def wait_idle(self, timeout: float = 30.0, tick: float = 0.2) -> None:
        """Until the server spends under 5% of a core for one tick (or ``timeout``).

        A load generator that stops leaves requests in flight; the server finishes
        them afterwards, and the next phase must not queue behind that work.
        """
        deadline = time.monotonic() + timeout
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(tick)
            now = self.cpu_seconds()
            if now - before < 0.05 * tick:
                return
            before = now

    def samples(self) -> dict[str, float]:
        """Current values of SERVER_SAMPLES (summed over labels) from /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        values = dict.fromkeys(SERVER_SAMPLES, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in values:
                    values[sample.name] += sample.value
        return values


def lvad_command(port: int, script: Path | None = None) -> list[str]:
    """`lvad serve` on ``port``: this environment's script unless ``script`` names another."""
    script = script or Path(sys.executable).with_name("lvad")
    if not script.exists():
        raise SystemExit(f"{script} not found: install the project (make setup) first")
    return [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its LVAD_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LVAD_")}
    return {**env, **extra}


@contextmanager
def serve(
    store: Path, env: dict[str, str], log: Path, lvad: Path | None = None
) -> Iterator[Server]:
    """Run `lvad serve` on a free 127.0.0.1 port with LVAD_STORE=store; kill its group on exit.

    LVAD_* variables of the caller's environment are dropped, so only ``env``
    (plus LVAD_STORE and LVAD_BOOTSTRAP_DEMO=false) configures the server.
    ``lvad`` is the `lvad` script to run (another checkout's, which must import
    its own code: this process's PYTHONPATH is dropped too); default: this
    environment's.
    """
    port = free_port()
    server_env = clean_env(LVAD_STORE=str(store), LVAD_BOOTSTRAP_DEMO="false", **env)
    if lvad is not None:
        server_env.pop("PYTHONPATH", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            lvad_command(port, lvad),
            env=server_env,
            cwd=store.parent,  # no stray .env file is read
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed below
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        yield server
    finally:
        stop(process)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {server.url} not ready after {READY_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- load


async def _one_client(
    client: httpx.AsyncClient, bodies: list[bytes], offset: int, deadline: float, budget: list[int]
) -> tuple[list[float], list[str]]:
    """Closed loop: send the next body as soon as the previous answer is in."""
    latencies: list[float] = []
    errors: list[str] = []
    i = offset
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        body = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            response = await client.post("/v1/score", content=body)
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if response.status_code == 200:
            latencies.append(time.perf_counter() - t0)
        else:
            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
    return latencies, errors


async def _drive(url: str, bodies: list[bytes], clients: int, seconds: float, budget: int, run):
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S, headers=headers
    ) as client:
        warm = [_one_client(client, bodies, i, float("inf"), [1]) for i in range(clients)]
        await asyncio.gather(*warm)  # open every connection before the clock starts
        started = time.perf_counter()
        shared = [budget]
        tasks = [_one_client(client, bodies, i, started + seconds, shared) for i in range(clients)]
        results = await asyncio.gather(*tasks)
        run.seconds = time.perf_counter() - started
    for latencies, errors in results:
        run.latencies += latencies
        run.errors += len(errors)
        run.first_error = run.first_error or (errors[0] if errors else "")


def load(
    server: Server, bodies: list[bytes], size: int, clients: int, seconds: float, budget: int
) -> Run:
    """``clients`` concurrent closed-loop clients POST /v1/score for ``seconds``.

    Each body holds ``size`` windows; at most ``budget`` requests are sent. The
    run also records this process's CPU time and the server's CPU and
    /metrics deltas over the same interval.
    """
    run = Run(size)
    with server_deltas(server, run):
        cpu = time.process_time()
        asyncio.run(_drive(server.url, bodies, clients, seconds, budget, run))
        run.client_cpu = time.process_time() - cpu
    return run


@contextmanager
def server_deltas(server: Server, run: Run) -> Iterator[None]:
    """Once the server is idle, record its CPU and SERVER_SAMPLES deltas over the block."""
    server.wait_idle()
    before, cpu, own = server.samples(), server.cpu_seconds(), server.own_cpu_seconds()
    yield
    run.server_cpu = server.cpu_seconds() - cpu
    run.server_own_cpu = server.own_cpu_seconds() - own
    after = server.samples()
    run.server = {name: after[name] - before[name] for name in SERVER_SAMPLES}


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str, body: Path, connections: int, seconds: float, timeout_s: float, histogram: bool
) -> dict:
    """One wrk run (at most two threads) POSTing ``body`` to ``url``: its JSON report.

    The report (tests/reliability/wrk_report.lua) gains ``errors``, the total of
    its error counts; ``histogram`` adds every latency as [microseconds, count].
    """
    command = [
        wrk_binary() or "wrk", f"-t{min(2, connections)}", f"-c{connections}",
        f"-d{max(1, round(seconds))}s", "--timeout", f"{timeout_s:.0f}s",
        "-s", str(WRK_SCRIPT), url, "--", str(body),
    ]  # fmt: skip
    env = {**os.environ, "WRK_LATENCY_HISTOGRAM": "1" if histogram else "0"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 180, env=env)
    reports = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not reports:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    report = json.loads(reports[-1])
    report["errors"] = sum(v for k, v in report.items() if k.endswith("_errors") or k == "timeouts")
    return report


def load_wrk(server: Server, body: Path, size: int, clients: int, seconds: float) -> Run:
    """Like :func:`load`, with wrk (C, two threads) as the load generator.

    wrk costs a fraction of the CPU of a Python client, which matters when client
    and server share two cores: with httpx, 32 clients of 1-window requests take
    most of a core themselves. ``body`` is a file holding one request body.
    """
    run = Run(size)
    with server_deltas(server, run):
        cpu = children_cpu()
        report = run_wrk(
            f"{server.url}/v1/score", body, clients, seconds, REQUEST_TIMEOUT_S, histogram=True
        )
        run.client_cpu = children_cpu() - cpu
    run.seconds, run.counted, run.errors = report["seconds"], report["requests"], report["errors"]
    if run.errors:
        run.first_error = f"wrk: {report}"
    # wrk's latency record also holds requests cut off at the end and failed ones
    for micros, count in report["latency_us"]:
        run.latencies += [micros / 1e6] * count
    return run


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")
