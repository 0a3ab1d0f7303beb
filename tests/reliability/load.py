"""Load on a real ``lvad serve`` with wrk while a training job runs (``make load-test``).

After a short warm-up, each repetition runs two phases against ``POST /v1/score``
on 127.0.0.1: 32 connections sending one window each, then 4 connections sending
1,000 windows each; then it reads the server's resident memory. A training job
(in its own process) trains from before the first phase to after the last.
Prints one line per phase and a JSON summary: requests, errors, p50/p99 latency,
RSS per repetition and its growth, and the load average (2 shared cores here).
``tests/reliability/test_load.py`` runs a short slice in CI; the defaults are the
long run of docs/reliability.md.

    python -m tests.reliability.load [--seconds 60] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.harness import run_wrk, wrk_binary
from tests.app.conftest import seeded_store
from tests.app.live import API_KEY, TINY_PARAMS, LiveServer, submit_job, synthetic_windows
from tests.conftest import FEATURES, make_synthetic

WARM_UP_S = 2
ENDLESS = {**TINY_PARAMS, "epochs": 10_000, "patience": 10_000}  # the most allowed: until cancelled


@dataclass(frozen=True)
class Phase:
    name: str
    connections: int
    windows: int  # per request


PHASES = (Phase("single window", 32, 1), Phase("1000-window batch", 4, 1000))


def phase_wrk(url: str, phase: Phase, body: Path, seconds: float) -> dict:
    """One wrk run of ``phase``: its JSON report plus the phase's name and connections."""
    report = run_wrk(url, body, phase.connections, seconds, timeout_s=60, histogram=False)
    return {"phase": phase.name, "connections": phase.connections, **report}


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def write_bodies(folder: Path) -> dict[str, Path]:
    bodies = {}
    for phase in PHASES:
        windows = synthetic_windows(phase.windows)  # (n, 16, 4)
        path = folder / f"body-{phase.windows}.json"
        path.write_text(json.dumps({"windows": windows.tolist(), "variables": FEATURES}))
        bodies[phase.name] = path
    return bodies


def run(model_file: Path, folder: Path, seconds: float, repeats: int) -> dict:
    """Serve ``model_file`` from a fresh store in ``folder`` and put it under load."""
    seeded_store(folder / "store", model_file)
    data = folder / "data"
    data.mkdir()
    values = make_synthetic(seed=1, n_train=3000, n_test=16).train  # (3000, 4)
    pd.DataFrame(values, columns=FEATURES).to_csv(data / "metrics.csv", index=False)
    bodies = write_bodies(folder)
    env = {"LVAD_API_KEY": API_KEY, "LVAD_BOOTSTRAP_DEMO": "false", "LVAD_DATA_DIR": str(data)}
    env["LVAD_LOG_LEVEL"] = "warning"  # no access log line per request
    with LiveServer.serving(folder / "store", folder / "server.log", env) as server:
        with server.client() as client:
            job = submit_job(client, ENDLESS, path="metrics.csv")
            for phase in PHASES:  # warm-up, not counted: allocator arenas, thread pools
                phase_wrk(server.base_url + "/v1/score", phase, bodies[phase.name], WARM_UP_S)
            phases, rss = [], []
            for repeat in range(1, repeats + 1):
                for phase in PHASES:
                    result = phase_wrk(
                        server.base_url + "/v1/score", phase, bodies[phase.name], seconds
                    )
                    result |= {"repeat": repeat, "load_average": os.getloadavg()[0]}
                    phases.append(result)
                    print(format_phase(result), flush=True)
                rss.append(resident_bytes(server.pid))
                print(f"repeat {repeat}: server RSS {rss[-1] / 2**20:.1f} MiB", flush=True)
            state = client.get(f"/v1/jobs/{job['id']}").json()
            client.delete(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {API_KEY}"})
        log = server.log_path.read_text()
    return summarize(phases, rss, state, log, seconds)


def format_phase(r: dict) -> str:
    return (
        f"repeat {r['repeat']} {r['phase']:>17} x{r['connections']:<2}: "
        f"{r['requests']:6d} requests in {r['seconds']:.1f} s, {r['errors']} errors, "
        f"p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms (load average {r['load_average']:.2f})"
    )


def summarize(phases: list[dict], rss: list[int], job: dict, log: str, seconds: float) -> dict:
    by_phase = {}
    for phase in PHASES:
        runs = [r for r in phases if r["phase"] == phase.name]
        by_phase[phase.name] = {
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "p50_ms": [r["p50_ms"] for r in runs],
            "p99_ms": [r["p99_ms"] for r in runs],
            "requests_per_s": [round(r["requests"] / r["seconds"], 1) for r in runs],
        }
    return {
        "seconds_per_phase": seconds,
        "phases": by_phase,
        "rss_mib": [round(b / 2**20, 1) for b in rss],
        "rss_growth": (rss[-1] - rss[0]) / rss[0],
        "job_state_during_load": job["state"],
        "job_epochs_during_load": len(job["history"]),
        "server_errors_logged": log.count("Traceback"),
        "load_average": [round(r["load_average"], 2) for r in phases],
        "cpus": os.cpu_count(),
        "runs": phases,
    }


def train_model(path: Path) -> Path:
    import torch

    from model.data import prepare_array
    from model.detector import Detector
    from tests.conftest import TINY

    torch.set_num_threads(1)
    detector = Detector.fit(prepare_array(make_synthetic().train, FEATURES), TINY)
    return detector.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per phase and repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("var/reliability/load.json"))
    args = parser.parse_args()
    if wrk_binary() is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; .ci/run does)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lvad-load-") as tmp:
        folder = Path(tmp)
        summary = run(train_model(folder / "tiny.lvad"), folder, args.seconds, args.repeats)
    summary["wall_seconds"] = round(time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    brief = {k: v for k, v in summary.items() if k != "runs"}
    print(json.dumps(brief, indent=1))
    errors = sum(p["errors"] for p in summary["phases"].values())
    if errors or summary["rss_growth"] >= 0.10 or summary["job_state_during_load"] != "running":
        raise SystemExit(f"FAILED: {errors} errors, RSS growth {summary['rss_growth']:.1%}")


if __name__ == "__main__":
    main()
