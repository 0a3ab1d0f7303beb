"""Model versions: list, inspect, activate (also the way to roll back)."""

from __future__ import annotations

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.http.deps import ReadAccess, ServiceDep, WriteAccess
from app.http.schemas import ErrorBody, ModelDetail, ModelPublic
from app.service import model_public

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = {status: {"model": ErrorBody} for status in (401, 403, 404, 422)}
Version = Path(ge=1, le=2**31 - 1, description="Model version number.")


@router.get("", response_model=list[ModelPublic], dependencies=[ReadAccess])
def list_models(service: ServiceDep) -> list[dict]:
    return [model_public(record) for record in service.store.list_models()]


@router.get("/{version}", response_model=ModelDetail, responses=ERRORS, dependencies=[ReadAccess])
async def get_model(service: ServiceDep, version: int = Version) -> dict:
    return await run_in_threadpool(service.model_detail, version)


@router.post(
    "/{version}/activate", response_model=ModelPublic, responses=ERRORS, dependencies=[WriteAccess]
)
async def activate_model(service: ServiceDep, version: int = Version) -> dict:
    """Load this version and make it the one that scores (use an older one to roll back)."""
    return model_public(await run_in_threadpool(service.activate, version))
