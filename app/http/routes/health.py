"""Liveness (never depends on the model) and readiness (503 until a model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter

from app.http.deps import ServiceDep
from app.http.schemas import ErrorBody, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def get_health() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
def get_ready(service: ServiceDep) -> Health:
    served = service.holder.require()
    return Health(status="ready", model_version=served.version)
