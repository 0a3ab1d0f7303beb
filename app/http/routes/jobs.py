"""Retraining jobs: create (upload or data-directory path), inspect, list, cancel."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.http.deps import ReadAccess, ServiceDep, WriteAccess
from app.http.schemas import ErrorBody, JobPublic
from model.errors import DataError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422)}


def parse_params(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"params is not valid JSON: {exc}", field="params") from exc
    if not isinstance(params, dict):
        raise DataError("params must be a JSON object of model parameters", field="params")
    return params


@router.post(
    "", status_code=202, response_model=JobPublic, responses=ERRORS, dependencies=[WriteAccess]
)
async def create_job(
    response: Response,
    service: ServiceDep,
    file: Annotated[UploadFile | None, File(description="CSV or Parquet training data.")] = None,
    path: Annotated[str | None, Form(description="A file under the data directory.")] = None,
    params: Annotated[
        str | None,
        Form(description='JSON object of model parameters, e.g. {"epochs": 20, "window": 64}.'),
    ] = None,
) -> JobPublic:
    """Queue a retraining job on an uploaded file or a file under the data directory.

    multipart/form-data with exactly one of `file` or `path`.
    """
    if (file is None) == (path is None):
        raise DataError("give exactly one of `file` (an upload) or `path`", field="file")
    overrides = parse_params(params)
    if file is not None:
        job = await run_in_threadpool(
            service.create_job_from_upload, file.filename or "", file.file, overrides
        )
    else:
        job = await run_in_threadpool(service.create_job_from_path, path, overrides)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.model_validate(job, from_attributes=True)


@router.get("", response_model=list[JobPublic], dependencies=[ReadAccess])
def list_jobs(service: ServiceDep) -> list[JobPublic]:
    return [JobPublic.model_validate(j, from_attributes=True) for j in service.store.list_jobs()]


@router.get("/{job_id}", response_model=JobPublic, responses=ERRORS, dependencies=[ReadAccess])
def get_job(job_id: str, service: ServiceDep) -> JobPublic:
    return JobPublic.model_validate(service.store.get_job(job_id), from_attributes=True)


@router.delete("/{job_id}", response_model=JobPublic, responses=ERRORS, dependencies=[WriteAccess])
def cancel_job(job_id: str, service: ServiceDep) -> JobPublic:
    """Cancel a queued or running job."""
    return JobPublic.model_validate(service.cancel_job(job_id), from_attributes=True)
