"""Sampling from the trained generative model: GET (prior) and POST (posterior around a
window), for the `default` model at /v1/sample and for any name at
/v1/models/{name}/sample."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Header, Query, Response

from app.http.deps import ComponentsDep, ModelName, ReadAccess
from app.http.json_body import OrjsonRoute
from app.http.schemas import ErrorBody, SampleRequest, SampleResponse
from app.registry.records import DEFAULT_MODEL
from app.scoring.models import ServedModel
from model.data import samples_frame

router = APIRouter(
    prefix="/v1", tags=["sampling"], dependencies=[ReadAccess], route_class=OrjsonRoute
)
CSV = "text/csv"
RESPONSES = {
    200: {"content": {CSV: {"schema": {"type": "string"}}}},
    **{status: {"model": ErrorBody} for status in (400, 401, 404, 413, 422, 503)},
}
N = Annotated[int, Query(ge=1, description="Number of windows.")]
Seed = Annotated[int, Query(ge=0, le=2**63 - 1)]
Noise = Annotated[bool, Query(description="Draw from p(x|z); false: its means.")]
Accept = Annotated[str | None, Header()]


def render(served: ServedModel, samples: np.ndarray, source: str, accept: str | None) -> Response:
    names = served.detector.feature_names
    headers = {"X-Model": served.name, "X-Model-Version": str(served.version)}
    if accept and CSV in accept:
        text = samples_frame(samples, names).to_csv(index=False)
        return Response(text, media_type=CSV, headers=headers)
    body = SampleResponse.model_construct(
        model=served.name,
        model_version=served.version,
        variables=names,
        source=source,
        samples=samples,
    )
    content = orjson.dumps(body.__dict__, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json", headers=headers)


@router.get("/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_prior(
    components: ComponentsDep, n: N = 1, seed: Seed = 0, noise: Noise = True, accept: Accept = None
) -> Response:
    """Synthetic windows of the `default` model from the prior z ~ N(0, I), in original
    units (JSON, or CSV with `Accept: text/csv`)."""
    served, samples = await components.sampler.prior(DEFAULT_MODEL, n, seed, noise)
    return render(served, samples, "prior", accept)


@router.post("/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_posterior(
    request: SampleRequest, components: ComponentsDep, accept: Accept = None
) -> Response:
    """Windows drawn around a given window by the `default` model (from q(z|window)): what
    normal looks like here."""
    served, samples = await components.sampler.posterior(DEFAULT_MODEL, request)
    return render(served, samples, "posterior", accept)


@router.get("/models/{name}/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_model_prior(
    name: ModelName,
    components: ComponentsDep,
    n: N = 1,
    seed: Seed = 0,
    noise: Noise = True,
    accept: Accept = None,
) -> Response:
    """Synthetic windows of the named model from the prior."""
    served, samples = await components.sampler.prior(name, n, seed, noise)
    return render(served, samples, "prior", accept)


@router.post("/models/{name}/sample", response_model=SampleResponse, responses=RESPONSES)
async def sample_model_posterior(
    name: ModelName, request: SampleRequest, components: ComponentsDep, accept: Accept = None
) -> Response:
    """Windows drawn around a given window by the named model."""
    served, samples = await components.sampler.posterior(name, request)
    return render(served, samples, "posterior", accept)
