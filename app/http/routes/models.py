"""Named models and their versions: list, inspect, activate (also the way to roll back)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.http.deps import ComponentsDep, ModelName, ReadAccess, Version, WriteAccess
from app.http.schemas import ErrorBody, ModelSummary, ModelVersions, VersionDetail, VersionPublic
from app.registry.records import VersionRecord

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = {status: {"model": ErrorBody} for status in (401, 403, 404, 422)}


def version_public(record: VersionRecord) -> VersionPublic:
    return VersionPublic.model_validate({k: v for k, v in asdict(record).items() if k != "path"})


@router.get("", response_model=list[ModelSummary], dependencies=[ReadAccess])
async def list_models(components: ComponentsDep) -> list[ModelSummary]:
    """Every model name with its active version and that version's variables."""
    loaded = {served.name for served in components.models.loaded()}
    records = await run_in_threadpool(components.registry.list_models)
    return [
        ModelSummary(
            name=record.name,
            created=record.created,
            active_version=record.active_version,
            versions=record.versions,
            feature_names=record.active.feature_names if record.active else None,
            window=record.active.window if record.active else None,
            threshold=record.active.threshold if record.active else None,
            loaded=record.name in loaded,
        )
        for record in records
    ]


@router.get("/{name}", response_model=ModelVersions, responses=ERRORS, dependencies=[ReadAccess])
async def get_model(name: ModelName, components: ComponentsDep) -> ModelVersions:
    """A model's versions, newest first."""
    versions = await run_in_threadpool(components.registry.list_versions, name)
    active = next((v.version for v in versions if v.active), None)
    return ModelVersions(
        name=name, active_version=active, versions=[version_public(v) for v in versions]
    )


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionDetail,
    responses=ERRORS,
    dependencies=[ReadAccess],
)
async def get_version(name: ModelName, version: Version, components: ComponentsDep) -> dict:
    """One version: its record, configuration, threshold and training metadata."""

    def describe() -> dict:
        record = components.registry.get_version(name, version)
        header = components.models.header(record)
        return {
            **version_public(record).model_dump(),
            "config": header["config"],
            "threshold_detail": header["threshold"],
            "metadata": header["metadata"],
        }

    return await run_in_threadpool(describe)


@router.post(
    "/{name}/versions/{version}/activate",
    response_model=VersionPublic,
    responses=ERRORS,
    dependencies=[WriteAccess],
)
async def activate_version(
    name: ModelName, version: Version, components: ComponentsDep
) -> VersionPublic:
    """Load this version and make it the one the model scores with (use an older one to roll
    back)."""
    return version_public(await run_in_threadpool(components.models.activate, name, version))
