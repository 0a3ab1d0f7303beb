"""Liveness (never depends on the model) and readiness (503 until a model is loaded).

Both are ``async def``: they answer on the event loop, never waiting for a worker
thread that parsing, scoring or file checks may all be holding.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ServiceDep
from app.schemas import ErrorBody, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def get_health() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
async def get_ready(service: ServiceDep) -> Health:
    served = service.holder.require()
    return Health(status="ready", model_version=served.version)
