"""``lvad serve``: uvicorn with the app factory, one worker."""

from __future__ import annotations

import logging

import uvicorn

from app.settings import Settings


def serve(host: str | None = None, port: int | None = None) -> None:
    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    # the factory builds its own Settings from the same environment
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
    )
