"""``lvad serve``: uvicorn with the app factory, one worker."""

from __future__ import annotations

import logging
import os

import uvicorn
from pydantic import ValidationError

from app.ops.malloc import limit_malloc_arenas
from app.pull.detectors_file import load_detectors_file
from app.registry.store_lock import StoreLock
from app.settings import Settings, settings_problems
from model.errors import LvadError


def pin_torch_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in every thread that runs the model.

    ``torch.set_num_threads`` alone sets the calling thread's OpenMP team size;
    requests are scored on the server's worker threads, whose teams still start at
    OpenMP's default (one thread per core), and those extra threads spin between
    calls, so every request costs CPU for threads the server was told not to use
    (docs/benchmarks.md). OpenMP reads OMP_NUM_THREADS when torch loads it, so it is
    set here first; an explicit OMP_NUM_THREADS wins.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def load_settings() -> Settings:
    """The settings from the environment, logging configured; LvadError names what is
    wrong (e.g. LVAD_API_KEY set but empty)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise LvadError(f"invalid settings: {settings_problems(exc)}") from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def serve(host: str | None = None, port: int | None = None, detectors: str | None = None) -> None:
    limit_malloc_arenas()
    if detectors is not None:  # the factory reads its settings from the environment
        os.environ["LVAD_DETECTORS"] = detectors
    settings = load_settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    if settings.detectors is not None:  # an invalid file: refused now, the field named
        load_detectors_file(settings.detectors)
    # another process on the store: say so and exit (the service takes the lock itself);
    # a replica of a scale-out keeps only a cache there
    settings.store.mkdir(parents=True, exist_ok=True)
    if not settings.scale_out:
        StoreLock(settings.store).release()
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
