"""Liveness (never depends on a model) and readiness (503 until a model is served).

Both are ``async`` and touch neither the thread pool nor the database, so they answer
while every worker thread is busy with requests."""

from __future__ import annotations

from fastapi import APIRouter

from app.errors import ModelNotReady
from app.http.deps import ComponentsDep
from app.http.schemas import ErrorBody, Health
from app.registry.records import DEFAULT_MODEL

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def get_health() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
async def get_ready(components: ComponentsDep) -> Health:
    served = {model.name: model.version for model in components.models.loaded()}
    if not served:
        raise ModelNotReady("no model is loaded yet (a new store trains its first one)")
    return Health(status="ready", model_version=served.get(DEFAULT_MODEL), models=served)
