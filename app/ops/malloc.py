"""glibc malloc settings (``mallopt``): fewer arenas for ``lvad serve``; freed buffers
kept for reuse where large model calls run (the scoring process, ``lvad score`` and
``lvad evaluate``).

Set at run time, before the work starts; an explicit environment variable of the
same name wins, and other C libraries (no ``mallopt``) are left alone.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MALLOC_ARENAS = 2
REUSED_BYTES = 16 * 1024 * 1024


def _mallopt(param: int, value: int) -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(param, value))
    except (OSError, AttributeError):
        return False


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts; True if it was set here.

    glibc gives threads that allocate at once their own arenas (up to 8 per core);
    the request thread pool then spreads big short-lived buffers (parsed request
    bodies, batches) over many arenas, and the resident memory creeps up under load
    (measured in docs/reliability.md). An explicit MALLOC_ARENA_MAX wins.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    return _mallopt(M_ARENA_MAX, arenas)


def reuse_freed_buffers(size: int = REUSED_BYTES) -> bool:
    """Keep freed blocks of up to ``size`` bytes for the next model call; True if set here.

    A model call on 512 windows allocates and frees ~10 MB of numpy and ONNX Runtime
    buffers. With glibc's adaptive defaults they came back from the kernel on every
    call (mapped afresh, or the heap trimmed and grown again): thousands of page
    faults and their kernel time in every call (``bench/allocator.py`` measures it,
    docs/benchmarks.md). Fixed thresholds (blocks under ``size`` from the heap, up
    to 2 x ``size`` of free heap kept) let the next call reuse the same pages, at the
    cost of that much resident memory held between calls. An explicit
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (or a ``glibc.malloc`` tunable
    in GLIBC_TUNABLES) wins.
    """
    told = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)
    if told or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mmap = _mallopt(M_MMAP_THRESHOLD, size)
    trim = _mallopt(M_TRIM_THRESHOLD, 2 * size)
    return mmap and trim
