"""Memory per loaded model (docs/deployment.md, "Scaling": the capacity plan).

Loads N copies of one model file into this process as a replica holds them
(``Detector.load``: the network and its ONNX Runtime session) and reports the growth of
the resident set per model, after a first load has paid for the libraries. A replica
holds each served model twice (its own process and the scoring process), so a
replica's model memory is about twice this per model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/model_memory.py --copies 20
    .venv/bin/python bench/model_memory.py --model var/demo-model.lvad --copies 20
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path

from service_bench import default_model

from model.detector import Detector


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(model: Path, copies: int) -> dict:
    first = Detector.load(model)  # libraries, allocator arenas: paid once
    gc.collect()
    before = resident_mb()
    held = [Detector.load(model) for _ in range(copies)]
    gc.collect()
    after = resident_mb()
    return {
        "model": str(model),
        "file_kb": round(model.stat().st_size / 1024, 1),
        "window": first.window,
        "variables": len(first.feature_names),
        "copies": len(held),
        "resident_before_mb": round(before, 1),
        "resident_after_mb": round(after, 1),
        "per_model_mb": round((after - before) / copies, 2),
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a model file (default: the demo model)")
    parser.add_argument("--copies", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model or default_model(), args.copies), indent=2))


if __name__ == "__main__":
    main()
