"""Training jobs: create (upload or data-directory path), inspect, list, cancel."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.http.deps import ComponentsDep, ReadAccess, WriteAccess
from app.http.schemas import ErrorBody, JobPublic
from app.registry.records import DEFAULT_MODEL, MODEL_NAME, JobRecord
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


def job_public(job: JobRecord) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


@router.post(
    "", status_code=202, response_model=JobPublic, responses=ERRORS, dependencies=[WriteAccess]
)
async def create_job(
    response: Response,
    components: ComponentsDep,
    file: Annotated[UploadFile | None, File(description="CSV or Parquet training data.")] = None,
    path: Annotated[str | None, Form(description="A file under the data directory.")] = None,
    params: Annotated[
        str | None,
        Form(description='JSON object of model parameters, e.g. {"epochs": 20, "window": 64}.'),
    ] = None,
    model: Annotated[
        str,
        Form(
            pattern=MODEL_NAME,
            description="The model to train a version of; a new name creates the model.",
        ),
    ] = DEFAULT_MODEL,
) -> JobPublic:
    """Queue a retraining job on an uploaded file or a file under the data directory.

    multipart/form-data with exactly one of `file` or `path`.
    """
    if (file is None) == (path is None):
        raise DataError("give exactly one of `file` (an upload) or `path`", field="file")
    overrides = parse_params(params)
    intake = components.jobs
    if file is not None:
        job = await run_in_threadpool(
            intake.from_upload, model, file.filename or "", file.file, overrides
        )
    else:
        job = await run_in_threadpool(intake.from_path, model, path, overrides)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.get("", response_model=list[JobPublic], dependencies=[ReadAccess])
async def list_jobs(
    components: ComponentsDep,
    model: Annotated[
        str | None, Query(pattern=MODEL_NAME, description="Only this model's.")
    ] = None,
) -> list[JobPublic]:
    """The latest 100 jobs, newest first."""
    jobs = await run_in_threadpool(components.registry.list_jobs, 100, model)
    return [job_public(job) for job in jobs]


@router.get("/{job_id}", response_model=JobPublic, responses=ERRORS, dependencies=[ReadAccess])
async def get_job(job_id: str, components: ComponentsDep) -> JobPublic:
    return job_public(await run_in_threadpool(components.registry.get_job, job_id))


@router.delete("/{job_id}", response_model=JobPublic, responses=ERRORS, dependencies=[WriteAccess])
async def cancel_job(job_id: str, components: ComponentsDep) -> JobPublic:
    """Cancel a queued or running job."""
    return job_public(await run_in_threadpool(components.runner.cancel, job_id))
