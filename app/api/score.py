"""POST /v1/score."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from app.arrays import OrjsonRoute
from app.deps import ReadAccess, ServiceDep
from app.schemas import ErrorBody, ScoreRequest, ScoreResponse


def check_value_count(request: Request, body: bytes) -> None:
    """Refuse a body with more values than the limits allow, before it is parsed."""
    request.app.state.service.scorer.check_body(body)


def compact_body(request: Request, document: Any) -> Any:
    """Number lists to arrays; a series whose variables are not the model's is refused
    before any of them is converted."""
    return request.app.state.service.scorer.compact(document)


class ScoreRoute(OrjsonRoute):
    body_check = staticmethod(check_value_count)
    compact = staticmethod(compact_body)


router = APIRouter(
    prefix="/v1", tags=["scoring"], dependencies=[ReadAccess], route_class=ScoreRoute
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
