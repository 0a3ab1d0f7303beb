"""What keeping a stream's alarm state costs the service: the registry read and save
that every chunk of a stream (every pull-mode group, every round) adds to its scoring.

    .venv/bin/python bench/stream_state_bench.py [--model FILE] [--streams 300]

Saves a stream state of the model for ``--streams`` new streams (insert), reads each
back, saves each again (update, the steady state), on a fresh store in a temporary
directory on this machine's disk, SQLite with synchronous commits. Three causal
states (pull mode's): a new one, one whose recent and seasonal checks hold all the
ranking scores they keep (the model's period), and one as a daily period of
one-minute data (1,440 points) would hold; and a full state of a stream scored as a
series, whose carry also keeps 100 windows of ranking scores (``model/carry.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from service_bench import default_model

from app.registry.registry import Registry
from app.registry.streams import StreamStates
from model.detector import Detector
from model.stream import StreamState


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
    detector = Detector.load(model)
    new = detector.stream_state(causal=True)
    full = replace(new, recent=scores(new.recent_span + new.recent_gap))
    daily = replace(full, season_period=1440, season_half=detector.window // 2)
    series = detector.stream_state(causal=False)
    carry = replace(series.carry, past=scores(series.carry.history))
    series = replace(series, recent=full.recent, carry=carry)
    states = {
        "a new state": new,
        f"a full state (period {new.season_period})": filled(full),
        "a full state of a daily period of one-minute data": filled(daily),
        f"a full series state (period {new.season_period}, carry)": filled(series),
    }
    for name, state in states.items():
        measure(model, state, args.streams, name)


def scores(n: int) -> list[float]:
    """``n`` ranking scores as a stream keeps them (full float precision)."""
    return np.random.default_rng(0).normal(20.0, 5.0, n).tolist()


def filled(state: StreamState) -> StreamState:
    """``state`` with the seasonal check's scores all there."""
    return replace(state, season=scores(state.season_period + state.season_half))


def measure(model: Path, state: StreamState, streams: int, name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lvad-streams-", dir=Path.cwd()) as tmp:
        registry = Registry(Path(tmp) / "store")
        try:
            shutil.copy(model, Path(tmp) / "model.lvad")
            registry.register_version("bench", Path(tmp) / "model.lvad", source="bench")
            states = StreamStates(registry.engine, streams)
            names = [f"group-{i}" for i in range(streams)]
            insert = per_call_ms(states.save("bench", n, 1, state, None) for n in names)
            read = per_call_ms(states.get("bench", n) for n in names)
            saved = [states.get("bench", n) for n in names]
            update = per_call_ms(
                states.save("bench", n, 1, state, s) for n, s in zip(names, saved, strict=True)
            )
        finally:
            registry.close()
    size = len(json.dumps(state.to_dict()))
    print(f"{streams} streams, {name}, {size:,} bytes of JSON:")
    print(f"  save of a new stream {insert:.2f} ms, read {read:.2f} ms, save {update:.2f} ms")
    print(f"  a chunk of a known stream: {read + update:.2f} ms of registry time")


if __name__ == "__main__":
    main()
