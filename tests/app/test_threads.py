"""``LVAD_TORCH_THREADS`` holds in the threads that score, not only in the main one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Scores once on a request-like worker thread, then prints how many threads the
# process has and what OMP_NUM_THREADS is: OpenMP workers stay alive as threads.
PROBE = """
import os, sys, threading, time
if sys.argv[1] == "pin":
    from app.ops.server import pin_torch_threads
    pin_torch_threads(1)
import torch
if sys.argv[1] == "set":
    torch.set_num_threads(1)
def work():  # a matrix product and an elementwise op far above torch's parallel grain
    torch.ones(256, 256) @ torch.ones(256, 256)
    torch.ones(4_000_000).exp()
worker = threading.Thread(target=work)
worker.start()
worker.join()
# join() returns before the OS thread is gone from /proc: wait, so only OpenMP's stay
for _ in range(200):
    if not os.path.exists(f"/proc/self/task/{worker.native_id}"):
        break
    time.sleep(0.01)
print(len(os.listdir("/proc/self/task")), os.environ.get("OMP_NUM_THREADS"))
"""


def probe(mode: str, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=environ, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), out[1]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_pinned_threads_start_no_openmp_workers_on_other_threads() -> None:
    pinned, omp = probe("pin")
    assert omp == "1"
    set_only, _ = probe("set")
    if (os.cpu_count() or 1) > 1:
        # torch.set_num_threads(1) alone still gives the worker thread a full team
        assert pinned < set_only
    else:
        assert pinned <= set_only


def test_an_explicit_omp_num_threads_wins() -> None:
    _, omp = probe("pin", OMP_NUM_THREADS="3")
    assert omp == "3"
