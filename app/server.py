"""``lvad serve``: uvicorn with the app factory, one worker."""

from __future__ import annotations

import ctypes
import logging
import os

import uvicorn

from app.settings import Settings

M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts; True if it was set here.

    glibc gives threads that allocate at once their own arenas (up to 8 per core);
    the request thread pool then spreads big short-lived buffers (parsed request
    bodies, batches) over many arenas, and the resident memory creeps up under load
    (docs/reliability.md: +11 % over five load runs, +3.5 % with two arenas). An
    explicit MALLOC_ARENA_MAX wins; other C libraries are left alone.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def pin_torch_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in every thread that runs the model.

    ``torch.set_num_threads`` alone sets the calling thread's OpenMP team size;
    requests are scored on the server's worker threads, whose teams still start at
    OpenMP's default (one thread per core), and those extra threads spin between
    calls: with 1 thread configured, a 1-window request cost 17 ms of server CPU
    instead of 8 (docs/benchmarks.md). OpenMP reads OMP_NUM_THREADS when torch
    loads it, so it is set here first; an explicit OMP_NUM_THREADS wins.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def serve(host: str | None = None, port: int | None = None) -> None:
    limit_malloc_arenas()
    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.torch_threads:
        pin_torch_threads(settings.torch_threads)
    # the factory builds its own Settings from the same environment
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
    )
