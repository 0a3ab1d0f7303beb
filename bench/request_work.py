"""Where the server's own time per large `/v1/score` request goes, with the heap as served.

    .venv/bin/python bench/request_work.py [--model PATH] [--batch 512] [--repeat 60]

Run it as a script (it imports its sibling ``service_bench.py``). In this process,
with the application's modules imported and the model loaded (the heap a server
has after start-up), it times the steps the server's process takes for one
request of ``--batch`` windows, apart from the model call, which a server makes
in its scoring process: parsing the body (orjson), validating it into an array
(the score route's path: values counted, number lists to arrays,
``ScoreRequest``), building the response (``windows_body``) and
its JSON. The garbage collector's time is measured alongside (``gc.callbacks``),
first with the heap as it is after start-up, then frozen as the server leaves it
(``app.components.settle_heap``).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import torch
from service_bench import bench_windows, default_model, request_bodies

import app.main  # noqa: F401  (the modules a server has loaded)
from app.components import settle_heap
from app.http.json_body import compact_score_body
from app.http.schemas import ScoreRequest
from app.scoring.models import ServedModel
from app.scoring.pipeline import windows_body
from model.detector import Detector


class CollectorClock:
    """Seconds and passes (all, and full ones) of the garbage collector while installed."""

    def __init__(self) -> None:
        self.reset()
        self._start = 0.0
        gc.callbacks.append(self._on_pass)

    def _on_pass(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.passes += 1
            self.full += info["generation"] == 2

    def reset(self) -> None:
        self.seconds, self.passes, self.full = 0.0, 0, 0


def mean_ms(call: Callable[[], object], repeat: int) -> float:
    """Mean, not median: a full collection comes every few requests, and counts."""
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return 1000 * (time.perf_counter() - started) / repeat


def parse_as_served(body: bytes) -> ScoreRequest:
    """The score route's parsing of a windows body: its values counted before parsing
    (``ScoringPipeline.check_body``), orjson, the number lists to one array, validation."""
    body.count(b",")
    document = compact_score_body(orjson.loads(body), lambda names, field: None)
    return ScoreRequest.model_validate(document)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model file (default: the cached demo model)")
    p.add_argument("--batch", type=int, default=512, help="windows per request")
    p.add_argument("--repeat", type=int, default=60, help="requests per measurement")
    args = p.parse_args()
    torch.set_num_threads(1)
    detector = Detector.load((args.model or default_model()).resolve())
    served = ServedModel("default", 1, detector, args.model or default_model())
    body = request_bodies(bench_windows(detector, args.batch), args.batch)[0]
    parsed = parse_as_served(body)
    scored = detector.score_windows(parsed.windows)

    def respond() -> bytes:
        return windows_body(parsed, served, scored)

    def request() -> bytes:
        parse_as_served(body)
        return respond()

    steps = {
        "parse (orjson)": lambda: orjson.loads(body),
        "parse + validate into an array": lambda: parse_as_served(body),
        "response payload + JSON": respond,
        "the whole request": request,
    }
    request()  # warm-up
    print(f"{args.batch}-window request: {len(body):,} bytes in, {len(respond()):,} out")
    clock = CollectorClock()
    columns = "heap", "tracked objects (frozen)", "step", "ms per request", "collector ms"
    columns += ("passes per request (full)",)
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for heap in ("after start-up", "frozen (settle_heap)"):
        if heap.startswith("frozen"):
            settle_heap()
        tracked = f"{len(gc.get_objects()):,} ({gc.get_freeze_count():,})"
        for name, call in steps.items():
            clock.reset()
            ms = mean_ms(call, args.repeat)
            collector = 1000 * clock.seconds / args.repeat
            passes = f"{clock.passes / args.repeat:.0f} ({clock.full / args.repeat:.2f})"
            print(f"| {heap} | {tracked} | {name} | {ms:.1f} | {collector:.1f} | {passes} |")


if __name__ == "__main__":
    main()
