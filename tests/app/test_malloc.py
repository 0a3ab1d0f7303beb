"""glibc malloc settings of the processes that run large model calls (``app/ops/malloc.py``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# In a fresh process (mallopt changes a process for good): set, then see where an
# 8 MiB block comes from. glibc's default threshold (128 KiB) maps it on its own
# (``hblkhd`` counts mapped bytes); with the buffers kept it comes from the heap.
SCRIPT = """
import ctypes
from app.ops.malloc import reuse_freed_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
was_set = reuse_freed_buffers()
before = libc.mallinfo2().hblkhd
block = libc.malloc(8 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(block))
print(was_set, mapped >= 8 << 20)
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "True False"),  # set here: the block comes from the heap, not mapped
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "False True"),  # the operator's setting wins
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "False True"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}, "False True"),
    ],
)
def test_freed_buffers_are_kept_unless_the_environment_says_otherwise(env, expected):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected
