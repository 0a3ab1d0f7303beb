"""POST /v1/score (the ``default`` model) and POST /v1/models/{name}/score."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.http.deps import ComponentsDep, ModelName, ReadAccess
from app.http.json_body import OrjsonRoute
from app.http.schemas import ErrorBody, ScoreRequest
from app.http.scores import ScoreResponse
from app.registry.records import DEFAULT_MODEL

router = APIRouter(
    prefix="/v1", tags=["scoring"], dependencies=[ReadAccess], route_class=OrjsonRoute
)
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 422, 503)}
JSON = "application/json"


@router.post("/score", response_model=ScoreResponse, responses=ERRORS)
async def score_default(request: ScoreRequest, components: ComponentsDep) -> Response:
    """Score windows or a series with the `default` model: per step score (smoothed, for
    ranking), alarm score (what meets the threshold), reconstruction log-probability, KL,
    threshold decision, severity and the variables at fault."""
    return Response(await components.scoring.score(DEFAULT_MODEL, request), media_type=JSON)


@router.post("/models/{name}/score", response_model=ScoreResponse, responses=ERRORS)
async def score_model(
    name: ModelName, request: ScoreRequest, components: ComponentsDep
) -> Response:
    """Score windows or a series with the named model (as `POST /v1/score` does with
    `default`)."""
    return Response(await components.scoring.score(name, request), media_type=JSON)
