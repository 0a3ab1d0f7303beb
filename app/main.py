"""The app factory: ``create_app(settings, registry)``; nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator

from app.components import Components
from app.http.body_limit import BodyLimit
from app.http.handlers import install_error_handlers, open_reads_in_schema
from app.http.routes import docs, health, jobs, models, sampling, scoring
from app.ops.metrics import ServiceMetrics
from app.settings import Settings

HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DESCRIPTION = """Multivariate time-series anomaly detection with LSTM-VAE models, by name.

Scores are negative reconstruction log-probabilities plus KL (nats; higher is
more anomalous), with a threshold fitted by extreme-value theory at training
time. `POST /v1/score` and `/v1/sample` use the model named `default`; every
model also answers under `/v1/models/{name}/`. Mutating endpoints need
`Authorization: Bearer <LVAD_API_KEY>`."""


def create_app(
    settings: Settings | None = None, registry: CollectorRegistry | None = None
) -> FastAPI:
    settings = settings or Settings()
    registry = registry if registry is not None else REGISTRY

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = Components(settings, ServiceMetrics(registry))
        app.state.components = components
        await components.start()
        try:
            yield
        finally:
            await components.stop()

    guarded_docs = settings.auth_reads  # the schema and its pages are reads too
    app = FastAPI(
        title="lvad",
        version="0.2.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None if guarded_docs else "/openapi.json",
        docs_url=None if guarded_docs else "/docs",
        redoc_url=None if guarded_docs else "/redoc",
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    routers = (health.router, scoring.router, sampling.router, jobs.router, models.router)
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, routers)
    if guarded_docs:
        app.include_router(docs.guarded_router(app))
    else:
        open_reads_in_schema(app, routers)
    Instrumentator(
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
        registry=registry,
    ).instrument(app, latency_lowr_buckets=HTTP_LATENCY_BUCKETS).expose(
        app, include_in_schema=False
    )
    return app
