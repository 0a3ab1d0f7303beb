"""Requests/s of 1, 2, 3 detector replicas behind HAProxy (docs/deployment.md, "Scaling").

Each replica is an `lvad serve` on 127.0.0.1 with its own copy of one store holding the
demo model (the embedded store), or, with ``--shared`` (PostgreSQL and Redis started on
loopback) or ``--registry-url``/``--broker-url``, a replica of a scale-out: the model in
PostgreSQL, each replica's store a cache. HAProxy (Debian's)
runs docker/haproxy/haproxy.cfg, the compose stack's, with the replicas listed
statically. wrk POSTs /v1/score through it with C connections for S seconds after a
warm-up; one replica is also measured without HAProxy, which is what the balancer costs.
Each replica gets LVAD_TORCH_THREADS threads (default 1), so N replicas can use N cores.

    make bench-replicas REPLICAS_ARGS="--replicas 1 2 3 --seconds 20"
    python bench/replicas_bench.py --windows 1 --connections 32 --out var/bench/replicas
    python bench/replicas_bench.py --shared --out var/bench/replicas-shared
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import orjson
from harness import Server, free_port, run_wrk, serve, wrk_binary
from prometheus_client.parser import text_string_to_metric_families
from service_bench import bench_windows, default_model, seed_store

from model.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_CONFIG = ROOT / "docker" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if not found:
        raise SystemExit("haproxy is not installed: tests/scale/install-servers.sh haproxy")
    return found


@contextmanager
def balancer(servers: list[Server], folder: Path):
    """HAProxy with the compose configuration in front of ``servers``: (url, metrics url)."""
    replicas = folder / "replicas.cfg"
    lines = [f"    server replica{n} {s.url.removeprefix('http://')}\n" for n, s in
             enumerate(servers, 1)]  # fmt: skip
    replicas.write_text("backend detectors from replicas\n" + "".join(lines))
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "LB_BIND": f"127.0.0.1:{port}"}
    env["LB_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    command = [haproxy_binary(), "-W", "-db", "-f", str(HAPROXY_CONFIG), "-f", str(replicas)]
    with (folder / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_all_up(metrics, len(servers), process)
        yield f"http://127.0.0.1:{port}", metrics
    finally:
        process.terminate()
        process.wait(30)


def server_states(metrics: str) -> list[str]:
    text = httpx.get(metrics, timeout=5).text
    return [
        sample.labels["state"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "haproxy_server_status" and sample.value == 1
    ]


def wait_all_up(metrics: str, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with {process.returncode}")
        try:
            if server_states(metrics) == ["UP"] * count:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"HAProxy did not see {count} replicas up")


def served_by_each(servers: list[Server]) -> list[float]:
    """POST /v1/score answered 2xx so far, per replica (its own /metrics)."""
    wanted = {"handler": "/v1/score", "method": "POST", "status": "2xx"}
    counts = []
    for server in servers:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        counts.append(sum(
            sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "http_requests_total" and wanted.items() <= sample.labels.items()
        ))  # fmt: skip
    return counts


def measure(url: str, servers: list[Server], body: Path, args: argparse.Namespace) -> dict:
    run_wrk(url + "/v1/score", body, args.connections, args.warm_up, 60, histogram=False)
    before = served_by_each(servers)
    cpu_before = sum(s.cpu_seconds() for s in servers)
    report = run_wrk(url + "/v1/score", body, args.connections, args.seconds, 60, histogram=False)
    cpu = sum(s.cpu_seconds() for s in servers) - cpu_before
    shares = [after - b for after, b in zip(served_by_each(servers), before, strict=True)]
    return {
        "requests_per_s": round(report["requests"] / report["seconds"], 1),
        "p50_ms": round(report["p50_ms"], 1),
        "p99_ms": round(report["p99_ms"], 1),
        "errors": report["errors"],
        "replica_cores_used": round(cpu / report["seconds"], 2),
        "requests_per_replica": [int(s) for s in shares],
    }


def run(args: argparse.Namespace, folder: Path, store: Path, body: Path) -> list[dict]:
    env = {"LVAD_TORCH_THREADS": str(args.torch_threads), "OMP_NUM_THREADS": "1"}
    if args.registry_url:
        env |= {"LVAD_REGISTRY_URL": args.registry_url, "LVAD_BROKER_URL": args.broker_url}
    results = []
    for count in args.replicas:
        with ExitStack() as stack:
            servers = []
            for n in range(count):
                copy = folder / f"n{count}" / f"store{n}"
                if args.registry_url:
                    copy.mkdir(parents=True)  # a cache: the model comes from PostgreSQL
                else:
                    shutil.copytree(store, copy)
                servers.append(stack.enter_context(serve(copy, env, copy.parent / f"{n}.log")))
            if count == 1:
                direct = measure(servers[0].url, servers, body, args)
                results.append({"replicas": 1, "through": "none", **direct})
                print(json.dumps(results[-1]), flush=True)
            url, _ = stack.enter_context(balancer(servers, folder / f"n{count}"))
            results.append({"replicas": count, "through": "haproxy",
                            **measure(url, servers, body, args)})  # fmt: skip
            print(json.dumps(results[-1]), flush=True)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--windows", type=int, default=1, help="windows per request")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm-up", type=float, default=3.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--registry-url", help="LVAD_REGISTRY_URL for every replica")
    parser.add_argument("--broker-url", help="LVAD_BROKER_URL, with --registry-url")
    parser.add_argument(
        "--shared", action="store_true",
        help="start PostgreSQL and Redis on loopback (tests/scale/servers.py) and use them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "replicas")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out = args.out.resolve()  # each replica runs in a folder of its own
    if wrk_binary() is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    haproxy_binary()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    model = default_model()
    with ExitStack() as stack:
        if args.shared:
            sys.path.insert(0, str(ROOT))  # the test tier's servers
            from tests.scale.servers import PostgresServer, RedisServer

            args.registry_url = stack.enter_context(PostgresServer.running()).url
            args.broker_url = stack.enter_context(RedisServer.running()).url
        if bool(args.registry_url) != bool(args.broker_url):
            raise SystemExit("--registry-url and --broker-url go together")
        store = seed_store(args.out / "store", model)
        if args.registry_url:
            seed_store(args.out / "seed-cache", model, args.registry_url)
        measure_all(args, store, model)


def measure_all(args: argparse.Namespace, store: Path, model: Path) -> None:
    load_before = os.getloadavg()
    windows = bench_windows(Detector.load(model), args.windows)  # (windows, T, D)
    body = args.out / "body.json"
    body.write_bytes(orjson.dumps({"windows": windows}, option=orjson.OPT_SERIALIZE_NUMPY))
    results = run(args, args.out, store, body)
    summary = {
        "cores": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "windows_per_request": args.windows,
        "registry": "postgresql" if args.registry_url else "sqlite",
        "connections": args.connections, "seconds": args.seconds, "results": results,
    }  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
