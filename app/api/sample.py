"""GET /v1/sample (prior) and POST /v1/sample (posterior around a window)."""

from __future__ import annotations

import io
from typing import Annotated

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from app.arrays import OrjsonRoute
from app.deps import ReadAccess, ServiceDep
from app.schemas import ErrorBody, SampleRequest, SampleResponse
from app.serving import ServedModel

router = APIRouter(
    prefix="/v1", tags=["sampling"], dependencies=[ReadAccess], route_class=OrjsonRoute
)
CSV = "text/csv"
RESPONSES = {
    200: {"content": {CSV: {"schema": {"type": "string"}}}},
    **{status: {"model": ErrorBody} for status in (400, 401, 413, 422, 503)},
}


def render(served: ServedModel, samples: np.ndarray, source: str, accept: str | None) -> Response:
    names = served.detector.feature_names
    if accept and CSV in accept:
        n, steps, d = samples.shape
        frame = pd.DataFrame(samples.reshape(n * steps, d), columns=names)
        frame.insert(0, "step", np.tile(np.arange(steps), n))
        frame.insert(0, "sample", np.repeat(np.arange(n), steps))
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        return Response(
            buffer.getvalue(), media_type=CSV, headers={"X-Model-Version": str(served.version)}
        )
    body = {
        "model_version": served.version,
        "variables": names,
        "source": source,
        "samples": samples,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.get("/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_prior(
    service: ServiceDep,
    n: Annotated[int, Query(ge=1, description="Number of windows.")] = 1,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    noise: Annotated[bool, Query(description="Draw from p(x|z); false: its means.")] = True,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Synthetic windows from the prior z ~ N(0, I), in original units (JSON or CSV)."""
    served, samples = await run_in_threadpool(service.sample_prior, n, seed, noise)
    return render(served, samples, "prior", accept)


@router.post("/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_posterior(
    request: SampleRequest, service: ServiceDep, accept: Annotated[str | None, Header()] = None
) -> Response:
    """Windows drawn around a given window (from q(z|window)): what normal looks like here."""
    served, samples = await run_in_threadpool(service.sample_posterior, request)
    return render(served, samples, "posterior", accept)
