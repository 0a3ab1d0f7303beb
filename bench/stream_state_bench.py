"""What keeping a stream's alarm state costs the service: the registry read and save
that every chunk of a stream (every pull-mode group, every round) adds to its scoring.

    .venv/bin/python bench/stream_state_bench.py [--model FILE] [--streams 300]

Saves a causal stream state of the model for ``--streams`` new streams (insert), reads
each back, saves each again (update, the steady state), on a fresh store in a
temporary directory on this machine's disk, SQLite with synchronous commits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from service_bench import default_model

from app.registry.registry import Registry
from app.registry.streams import StreamStates
from model.detector import Detector


def per_call_ms(calls) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in calls)
    return (time.perf_counter() - started) / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (default: the cached demo model)")
    parser.add_argument("--streams", type=int, default=300)
    args = parser.parse_args()
    model = (args.model or default_model()).resolve()
    state = Detector.load(model).stream_state(causal=True)
    with tempfile.TemporaryDirectory(prefix="lvad-streams-", dir=Path.cwd()) as tmp:
        registry = Registry(Path(tmp) / "store")
        try:
            shutil.copy(model, Path(tmp) / "model.lvad")
            registry.register_version("bench", Path(tmp) / "model.lvad", source="bench")
            states = StreamStates(registry.engine, args.streams)
            names = [f"group-{i}" for i in range(args.streams)]
            insert = per_call_ms(states.save("bench", n, 1, state, None) for n in names)
            read = per_call_ms(states.get("bench", n) for n in names)
            saved = [states.get("bench", n) for n in names]
            update = per_call_ms(
                states.save("bench", n, 1, state, s) for n, s in zip(names, saved, strict=True)
            )
        finally:
            registry.close()
    size = len(json.dumps(state.to_dict()))
    print(f"{args.streams} streams, a new state of {size:,} bytes of JSON:")
    print(f"  save of a new stream {insert:.2f} ms, read {read:.2f} ms, save {update:.2f} ms")
    print(f"  a chunk of a known stream: {read + update:.2f} ms of registry time")


if __name__ == "__main__":
    main()
