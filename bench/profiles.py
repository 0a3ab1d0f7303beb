"""py-spy profiles of a running server for ``service_bench.py --profile``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """py-spy record (collapsed stacks, all threads, idle excluded) of ``pid`` for ``seconds``."""
    exe = py_spy()
    if exe is None:
        raise SystemExit("--profile needs py-spy (.venv/bin/pip install py-spy)")
    command = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "200", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def summarize_stacks(path: Path, top: int = 12) -> tuple[int, list[tuple[str, int]], list]:
    """(samples, top self frames, top inclusive frames) of a py-spy raw (collapsed) file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    return total, own.most_common(top), inclusive.most_common(top)


def short_frame(frame: str) -> str:
    """'score (model/detector.py:190)' -> 'score (model/detector.py)'; site-packages trimmed."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    elif "/work/" in where or where.startswith("/"):
        where = "/".join(where.split("/")[-2:])
    return f"{name} ({where})" if where else name
