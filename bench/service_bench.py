"""Service benchmark: the raw model against `/v1/score` of real `lvad serve` processes.

    .venv/bin/python bench/service_bench.py [--model PATH] [--duration S] [--out FILE]

Run it as a script (it imports its sibling ``harness.py``). In one run, on one
model, it measures

1. ``Detector.score_windows`` in this process on batches of 1, 64 and 512 windows;
2. POST /v1/score with 512-window requests from a few clients (micro-batching on);
3. 1-window requests from 32 clients, against a server with LVAD_MICRO_BATCHING=true
   and against a second one with false.

The HTTP load comes from wrk when it is installed (``--client``; it uses a small
fraction of a core, where a Python client of 32 connections takes most of one of
the two cores the server needs), otherwise from httpx in this process.

Each server gets its own temporary store seeded with the model. The phases run
interleaved in ``--rounds`` rounds of ``duration / rounds`` seconds each, so
a load change on a shared machine hits all of them alike; each ratio is the
pooled HTTP throughput over the pooled raw throughput it is compared to, with
the spread of the per-round ratios. Without ``--model`` a model is trained on
the built-in demo data with the default ModelConfig, once, and cached under
var/bench/.

``--baseline-tree PATH`` adds an A/B: every HTTP phase also runs against
servers of another checkout (its own ``.venv``, see ``baseline.py``), right
before or after its twin (the order alternates by round), and a second table
gives each phase's throughput against the baseline's, with the goals of a
change that must not slow the service down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import torch
from baseline import BaselineTree, twin_key
from harness import (
    Run,
    load,
    load_wrk,
    serve,
    time_calls,
    wrk_binary,
)
from numpy.lib.stride_tricks import sliding_window_view
from profiles import start_profile, summarize_stacks
from service_report import ab_table, add_profiles, environment, goals, loads, summary, table

from app.ops.malloc import reuse_freed_buffers
from app.registry.registry import Registry
from model.config import ModelConfig
from model.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "var" / "bench"
BUDGET = 200_000  # most model calls / requests in one timed slice


@dataclass(frozen=True)
class Phase:
    key: str
    size: int  # windows per model call or request
    clients: int = 0  # 0: in-process model calls
    server: str = ""  # "micro" or "plain"
    reference: tuple[str, ...] = ()  # raw phases it is compared to (the best of them)
    baseline: bool = False  # against the --baseline-tree's server

    @property
    def label(self) -> str:
        if not self.clients:
            return f"raw score_windows, batch {self.size}"
        batching = "micro-batching on" if self.server.endswith("micro") else "micro-batching off"
        tree = ", baseline" if self.baseline else ""
        return f"/v1/score {self.size} win/req x {self.clients} clients, {batching}{tree}"

    def twin(self) -> Phase:
        """The same load against the baseline's server of the same kind."""
        return replace(self, key=twin_key(self.key), server=f"base-{self.server}", baseline=True)


def make_phases(args: argparse.Namespace) -> list[Phase]:
    batched = ("raw@64", "raw@512")
    phases = [
        Phase("raw@1", 1),
        Phase("raw@64", 64),
        Phase("raw@512", 512),
        Phase("http@512", args.batch, args.batch_clients, "micro", ("raw@512",)),
        Phase("http@1 micro", 1, args.single_clients, "micro", batched),
        Phase("http@1 plain", 1, args.single_clients, "plain", batched),
    ]
    if not args.baseline_tree:
        return phases
    return [twin for p in phases for twin in ((p, p.twin()) if p.clients else (p,))]


def round_order(phases: list[Phase], number: int) -> list[Phase]:
    """The phases of round ``number``: in every other round a baseline twin goes first."""
    order = list(phases)
    if number % 2:
        for i, phase in enumerate(order):
            if phase.baseline:  # it follows its twin in ``phases``
                order[i - 1], order[i] = phase, order[i - 1]
    return order


# ---------------------------------------------------------------- model and data


def default_model() -> Path:
    """The demo model with the default ModelConfig, trained once and cached by config."""
    config = ModelConfig()
    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    path = CACHE / f"demo-{key[:12]}.lvad"
    if not path.exists():
        from model.data import prepare_frame
        from model.evaluation.demo import make_demo

        print(f"training the demo model (default ModelConfig) -> {path}", flush=True)
        Detector.fit(prepare_frame(make_demo().train), config).save(path)
    return path


def bench_windows(detector: Detector, n: int) -> np.ndarray:
    """n windows (n, T, D) in original units: the demo test data if it fits, else samples."""
    from model.evaluation.demo import make_demo

    test = make_demo().test
    if set(detector.feature_names) <= set(test.columns):
        values = test[detector.feature_names].to_numpy(dtype=np.float64)  # (rows, D)
        view = sliding_window_view(values, detector.window, axis=0)  # (rows-T+1, D, T)
        if len(view) >= n:
            return np.ascontiguousarray(view[:n].transpose(0, 2, 1))
    return detector.sample(n, seed=0)


def seed_store(root: Path, model_path: Path, url: str | None = None) -> Path:
    """A store (or the registry at ``url``, ``root`` its cache) whose version 1 (active) is a
    copy of ``model_path``."""
    registry = Registry(root, url)
    copy = root / "incoming.lvad"
    shutil.copy(model_path, copy)
    record = registry.register_version("default", copy, source="bench")
    registry.set_active("default", record.version)
    registry.close()
    return root


def request_bodies(windows: np.ndarray, size: int) -> list[bytes]:
    """JSON bodies of ``size`` windows each: one for big batches, up to 64 distinct singles."""
    count = 1 if size > 1 else min(64, len(windows))
    option = orjson.OPT_SERIALIZE_NUMPY
    return [orjson.dumps({"windows": windows[i : i + size]}, option=option) for i in range(count)]


def write_body(folder: Path, size: int, body: bytes) -> Path:
    path = folder / f"body-{size}.json"
    path.write_bytes(body)
    return path


# ---------------------------------------------------------------- measuring


@dataclass
class Results:
    totals: dict[str, Run]
    rounds: list[dict[str, Run]]

    def rate(self, key: str, round_: int | None = None) -> float:
        run = self.totals[key] if round_ is None else self.rounds[round_][key]
        return run.windows / run.seconds if run.seconds else float("nan")

    def reference(self, phase: Phase, round_: int | None = None) -> tuple[str, float]:
        rates = {key: self.rate(key, round_) for key in phase.reference}
        best = max(rates, key=rates.__getitem__)
        return best, rates[best]

    def ratio(self, phase: Phase, round_: int | None = None) -> float:
        return self.rate(phase.key, round_) / self.reference(phase, round_)[1]


def measure(phase: Phase, seconds: float, detector, windows, servers, bodies) -> Run:
    """One timed slice of ``phase``, once every server has finished the requests an
    earlier phase left in flight (they share the cores with this one)."""
    for server in servers.values():
        server.wait_idle()
    if not phase.clients:
        batch = windows[: phase.size]
        return time_calls(lambda: detector.score_windows(batch), phase.size, seconds, BUDGET)
    server, body = servers[phase.server], bodies[phase.size]
    if isinstance(body, Path):  # a body file for wrk
        return load_wrk(server, body, phase.size, phase.clients, seconds)
    return load(server, body, phase.size, phase.clients, seconds, BUDGET)


def run_rounds(phases, args, detector, windows, servers, bodies) -> Results:
    slice_s = args.duration / args.rounds
    for phase in phases:  # warm-up, not counted: first calls, connections, allocator
        measure(phase, min(1.0, slice_s), detector, windows, servers, bodies)
    results = Results({p.key: Run(p.size) for p in phases}, [])
    for number in range(args.rounds):
        this_round = {}
        for phase in round_order(phases, number):
            run = measure(phase, slice_s, detector, windows, servers, bodies)
            this_round[phase.key] = run
            results.totals[phase.key].merge(run)
            print(
                f"round {number + 1}/{args.rounds} {phase.key:<17} "
                f"{run.windows / run.seconds:9.1f} windows/s",
                flush=True,
            )
        results.rounds.append(this_round)
    return results


def profile_servers(phases, args, servers, bodies) -> dict[str, tuple]:
    """One extra, unmeasured slice per HTTP phase with py-spy attached to its server."""
    slice_s = args.duration / args.rounds
    found = {}
    for phase in (p for p in phases if p.clients):
        server = servers[phase.server]
        out = CACHE / f"profile-{phase.key.replace(' ', '-').replace('@', '')}.txt"
        spy = start_profile(server.process.pid, slice_s, out)
        time.sleep(0.5)  # let py-spy attach before the load starts
        measure(phase, slice_s, None, None, servers, bodies)
        spy.wait(timeout=slice_s + 60)
        found[phase.key] = (out, *summarize_stacks(out))
    return found


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model file (default: cached demo model)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per phase (all rounds)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--batch", type=int, default=512, help="windows per large request")
    p.add_argument("--batch-clients", type=int, default=4, help="clients sending large requests")
    p.add_argument("--single-clients", type=int, default=32, help="clients sending 1 window")
    p.add_argument("--torch-threads", type=int, default=0, help="0: torch default (as served)")
    p.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for servers")
    p.add_argument(
        "--client",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="load generator for the HTTP phases (auto: wrk if installed, else httpx)",
    )
    p.add_argument(
        "--baseline-tree",
        type=lambda path: BaselineTree(Path(path).resolve()),
        help="another checkout (with its .venv) whose servers take the same load, A/B",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the servers afterwards")
    p.add_argument("--out", type=Path, help="write a markdown fragment here")
    args = p.parse_args(argv)
    if args.client == "auto":
        args.client = "wrk" if wrk_binary() else "httpx"
    elif args.client == "wrk" and not wrk_binary():
        p.error("--client wrk: wrk is not installed (bash tests/reliability/install-wrk.sh)")
    if args.baseline_tree and (problem := args.baseline_tree.problem()):
        p.error(f"--baseline-tree: {problem}")
    if args.duration <= 0 or args.rounds < 1 or min(args.batch, args.batch_clients) < 1:
        p.error("--duration, --rounds, --batch and --batch-clients must be positive")
    return args


def server_env(args: argparse.Namespace, micro: bool) -> dict[str, str]:
    env = dict(pair.split("=", 1) for pair in args.server_env)
    env["LVAD_MICRO_BATCHING"] = "true" if micro else "false"
    if args.torch_threads:
        env["LVAD_TORCH_THREADS"] = str(args.torch_threads)
    return env


def start_servers(args, model_path: Path, tmp: Path, stack: ExitStack) -> dict:
    """A server with micro-batching on and one with it off, from this checkout and,
    with --baseline-tree, from that one; each on its own store, stopped by ``stack``."""
    trees = [("", None)] + ([("base-", args.baseline_tree)] if args.baseline_tree else [])
    servers = {}
    for prefix, tree in trees:
        for kind in ("micro", "plain"):
            name = prefix + kind
            root = tmp / name / "store"
            store = tree.seed_store(root, model_path) if tree else seed_store(root, model_path)
            env, log = server_env(args, kind == "micro"), CACHE / f"server-{name}.log"
            lvad = tree.lvad if tree else None
            servers[name] = stack.enter_context(serve(store, env, log, lvad))
    return servers


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_start = os.getloadavg()
    reuse_freed_buffers()  # the raw model runs as in the server's scoring process
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model_path = (args.model or default_model()).resolve()
    detector = Detector.load(model_path)
    windows = bench_windows(detector, max(args.batch, 512))
    phases = make_phases(args)
    bodies = {size: request_bodies(windows, size) for size in {p.size for p in phases if p.clients}}
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lvad-bench-") as tmp, ExitStack() as stack:
        if args.client == "wrk":  # one body per size, in a file wrk reads
            bodies = {size: write_body(Path(tmp), size, b[0]) for size, b in bodies.items()}
        servers = start_servers(args, model_path, Path(tmp), stack)
        results = run_rounds(phases, args, detector, windows, servers, bodies)
        profiles = profile_servers(phases, args, servers, bodies) if args.profile else {}
    load_end = os.getloadavg()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    lines = [f"`{command}`", "", *environment(args, model_path)]
    lines.append(f"- load average (1/5/15 min): start {loads(load_start)}, end {loads(load_end)}")
    lines += ["", *table(phases, results), "", summary(phases, results)]
    if args.baseline_tree:
        lines += ["", *ab_table(phases, results), ""]
        lines.append(goals(phases, results, "http@512", "http@1 micro"))
    lines = add_profiles(lines, profiles)
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
