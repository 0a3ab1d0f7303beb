"""POST /v1/score."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from app.http.deps import ReadAccess, ServiceDep
from app.http.json_body import OrjsonRoute
from app.http.schemas import ErrorBody, ScoreRequest, ScoreResponse

router = APIRouter(
    prefix="/v1", tags=["scoring"], dependencies=[ReadAccess], route_class=OrjsonRoute
)
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 413, 422, 503)}


@router.post("/score", response_model=ScoreResponse, responses=ERRORS)
async def score_data(request: ScoreRequest, service: ServiceDep) -> Response:
    """Score windows or a series: per step score (smoothed, for ranking), alarm score (what
    meets the threshold), reconstruction log-probability, KL, threshold decision, severity
    and the variables at fault."""
    body = await service.score(request)
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
