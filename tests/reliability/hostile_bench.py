"""What hostile requests cost a real ``lvad serve``: the numbers of docs/reliability.md.

Four measurements, each against a fresh server on 127.0.0.1 serving the test suite's
tiny model (window 16, 4 variables), one torch thread:

* ``stall``: 45 concurrent score requests whose series has 32,000 variable names
  (~0.5 MB each, no key needed); meanwhile ``GET /healthz`` and a 1-window score are
  timed in a loop. Reports their latencies, the hostile requests' and the server's CPU.
* ``series``: one 64 MiB series body (13 million points of one variable, over the
  point limit); the server's peak resident memory above its level before.
* ``parquet``: a Parquet upload of 25 million zeros (~100 kB compressed); the peak
  resident memory of the server and its children above their level before.
* ``epochs``: a job of many tiny epochs; bytes the server wrote (``/proc/PID/io``)
  and the registry's size afterwards.

    python -m tests.reliability.hostile_bench [stall|series|parquet|epochs ...]
        [--epochs 1000] [--out var/reliability/hostile.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from tests.app.conftest import seeded_store
from tests.app.live import API_KEY, AUTH, LiveServer, synthetic_windows, wait_until
from tests.conftest import FEATURES
from tests.reliability.load import train_model

HOSTILE_REQUESTS = 45
HOSTILE_VARIABLES = 32_000
STALL_CAP_S = 90.0  # stop timing after this long even if hostile requests still run
SERIES_BYTES = 64 * 2**20
BOMB_ROWS = 25_000_000
SAMPLE_S = 0.01
TICKS = 100  # clock ticks per second (/proc/PID/stat)


# ---------------------------------------------------------------------- /proc readings
def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` field in bytes (``VmRSS``, ``VmHWM``); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def tree_rss(pid: int) -> int:
    return sum(proc_status(p, "VmRSS") for p in descendants(pid))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for process {pid}")


@contextmanager
def peak_tree_rss(pid: int) -> Iterator[dict]:
    """Samples the resident memory of ``pid``'s process tree every 10 ms; on exit the
    dict holds ``before`` and ``peak`` (bytes), and ``server_hwm``: the server's own peak
    (VmHWM, reset at the start), which sampling cannot miss."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    result = {"before": tree_rss(pid), "server_before": proc_status(pid, "VmRSS")}
    stop = threading.Event()

    def sample() -> None:
        peak = result["before"]
        while not stop.is_set():
            peak = max(peak, tree_rss(pid))
            time.sleep(SAMPLE_S)
        result["peak"] = peak

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result["server_hwm"] = proc_status(pid, "VmHWM")


def mib(value: float) -> float:
    return round(value / 2**20, 1)


# ---------------------------------------------------------------------- servers
@contextmanager
def serving(folder: Path, model: Path, **env: str) -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="server-", dir=folder))
    seeded_store(root / "store", model)
    environment = {"LVAD_API_KEY": API_KEY, "LVAD_BOOTSTRAP_DEMO": "false"}
    environment |= {"LVAD_LOG_LEVEL": "warning", **env}
    with LiveServer.serving(root / "store", root / "server.log", environment) as server:
        yield server


def timed(call: Callable[[], httpx.Response]) -> tuple[int, float]:
    """(status, seconds) of a request; status 0 if the connection failed."""
    started = time.perf_counter()
    try:
        status = call().status_code
    except httpx.TransportError:
        status = 0
    return status, time.perf_counter() - started


def summary_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50_ms": round(1000 * statistics.median(seconds), 1),
        "max_ms": round(1000 * max(seconds), 1),
    }


# ---------------------------------------------------------------------- measurements
def measure_stall(folder: Path, model: Path) -> dict:
    variables = {f"v{i}": [0.5] for i in range(HOSTILE_VARIABLES)}
    hostile = json.dumps({"series": {"variables": variables}}).encode()
    window = {"windows": synthetic_windows(1).tolist(), "variables": FEATURES, "explain": "none"}
    with serving(folder, model) as server:
        url = server.base_url
        cpu_before = cpu_seconds(server.pid)
        done = threading.Event()
        health, scores = [], []

        def post_hostile(_: int) -> tuple[int, float]:
            with httpx.Client(base_url=url, timeout=STALL_CAP_S + 60) as client:
                headers = {"content-type": "application/json"}
                return timed(lambda: client.post("/v1/score", content=hostile, headers=headers))

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=STALL_CAP_S) as client:
                while not done.is_set():
                    health.append(timed(lambda: client.get("/healthz")))
                    scores.append(timed(lambda: client.post("/v1/score", json=window)))

        started = time.monotonic()
        pool = ThreadPoolExecutor(HOSTILE_REQUESTS + 1)
        prober = pool.submit(probe)
        time.sleep(0.2)
        answers = [pool.submit(post_hostile, i) for i in range(HOSTILE_REQUESTS)]
        deadline = started + STALL_CAP_S
        while time.monotonic() < deadline and not all(a.done() for a in answers):
            time.sleep(0.1)
        done.set()
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        prober.result()
        hostile_results = [a.result() for a in answers if a.done()]
        server.kill_group()  # requests still running end with it
        pool.shutdown(wait=True)
    return {
        "hostile_requests": HOSTILE_REQUESTS,
        "hostile_body_bytes": len(hostile),
        "hostile_answered": len(hostile_results),
        "hostile_statuses": sorted({status for status, _ in hostile_results}),
        "hostile": summary_ms([s for _, s in hostile_results]),
        "healthz": summary_ms([s for status, s in health if status == 200]),
        "healthz_failed": sum(status != 200 for status, _ in health),
        "score_1_window": summary_ms([s for status, s in scores if status == 200]),
        "score_failed": sum(status != 200 for status, _ in scores),
        "wall_s": round(elapsed, 1),
        "server_cpu_s": round(cpu, 1),
    }


def measure_series(folder: Path, model: Path) -> dict:
    points = SERIES_BYTES // len(b"0.5, ")
    body = json.dumps({"series": {"variables": {"alpha": [0.5] * points}}}).encode()
    with (
        serving(folder, model) as server,
        server.client(timeout=300) as client,
        peak_tree_rss(server.pid) as memory,
    ):
        started = time.perf_counter()
        response = client.post(
            "/v1/score", content=body, headers={"content-type": "application/json"}
        )
        seconds = time.perf_counter() - started
    return {
        "body_mib": mib(len(body)),
        "points": points,
        "status": response.status_code,
        "error": response.json().get("error"),
        "seconds": round(seconds, 2),
        **memory_report(memory, len(body)),
    }


def memory_report(memory: dict, body: int) -> dict:
    server_growth = memory["server_hwm"] - memory["server_before"]
    tree_growth = memory["peak"] - memory["before"]
    return {
        "server_rss_before_mib": mib(memory["server_before"]),
        "server_peak_growth_mib": mib(server_growth),
        "tree_peak_growth_mib": mib(tree_growth),
        "server_growth_per_body_byte": round(server_growth / body, 1),
    }


def parquet_bomb() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"alpha": np.zeros(BOMB_ROWS)}).to_parquet(buffer)
    return buffer.getvalue()


def measure_parquet(folder: Path, model: Path) -> dict:
    bomb = parquet_bomb()
    form = {"file": ("bomb.parquet", bomb, "application/octet-stream"), "params": (None, "{}")}
    with serving(folder, model) as server, server.client(timeout=300) as client:
        with peak_tree_rss(server.pid) as memory:
            response = client.post("/v1/jobs", files=form, headers=AUTH)
        if response.status_code == 202:  # accepted: stop the job before it trains
            client.delete(f"/v1/jobs/{response.json()['id']}", headers=AUTH)
    return {
        "upload_kib": round(len(bomb) / 1024, 1),
        "rows": BOMB_ROWS,
        "status": response.status_code,
        "error": response.json().get("error"),
        "message": response.json().get("message", "")[:200],
        **memory_report(memory, len(bomb)),
    }


def measure_epochs(folder: Path, model: Path, epochs: int) -> dict:
    data = folder / "tiny-epochs.csv"
    rows = np.random.default_rng(0).random((120, 2))
    pd.DataFrame(rows, columns=["a", "b"]).to_csv(data, index=False)
    params = {
        "window": 8, "hidden_size": 2, "latent_dim": 1, "epochs": epochs, "patience": epochs,
        "batch_size": 256, "max_train_windows": 16,
    }  # fmt: skip
    with serving(folder, model) as server, server.client(timeout=60) as client:
        before = written_bytes(server.pid)
        form = {"file": (data.name, data.read_bytes(), "text/csv")}
        form["params"] = (None, json.dumps(params))
        job = client.post("/v1/jobs", files=form, headers=AUTH).json()
        started = time.monotonic()

        def finished() -> bool:
            state = client.get(f"/v1/jobs/{job['id']}").json()["state"]
            return state not in ("queued", "running")

        wait_until(finished, 1800, f"job {job['id']} finished", interval=1.0)
        seconds = time.monotonic() - started
        final = client.get(f"/v1/jobs/{job['id']}").json()
        written = written_bytes(server.pid) - before
        store = server.log_path.parent / "store"
        registry = sum(p.stat().st_size for p in store.glob("registry.sqlite3*"))
    return {
        "epochs": epochs,
        "state": final["state"],
        "epochs_recorded": len(final["history"]),
        "job_seconds": round(seconds, 1),
        "server_written_mib": mib(written),
        "written_per_epoch_kib": round(written / epochs / 1024, 1),
        "registry_mib": mib(registry),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    choices = ["stall", "series", "parquet", "epochs"]
    parser.add_argument("what", nargs="*", help=f"any of {', '.join(choices)} (default: all)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("var/reliability/hostile.json"))
    args = parser.parse_args()
    if unknown := set(args.what) - set(choices):
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="lvad-hostile-") as tmp:
        folder = Path(tmp)
        model = train_model(folder / "tiny.lvad")
        runs = {
            "stall": lambda: measure_stall(folder, model),
            "series": lambda: measure_series(folder, model),
            "parquet": lambda: measure_parquet(folder, model),
            "epochs": lambda: measure_epochs(folder, model, args.epochs),
        }
        for name in args.what or choices:
            results[name] = runs[name]()
            print(name, json.dumps(results[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
