"""POST /v1/score (the ``default`` model) and POST /v1/models/{name}/score."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.http.deps import ComponentsDep, ModelName, ReadAccess
from app.http.json_body import OrjsonRoute
from app.http.schemas import ErrorBody, ScoreRequest
from app.http.scores import ScoreResponse
from app.registry.records import DEFAULT_MODEL


def model_of(request: Request) -> str:
    return request.path_params.get("name", DEFAULT_MODEL)


def check_value_count(request: Request, body: bytes) -> None:
    """Refuse a body with more values than the limits allow, before it is parsed."""
    request.app.state.components.scoring.check_body(model_of(request), body)


def compact_body(request: Request, document: Any) -> Any:
    """Number lists to arrays; a series whose variables are not the model's is refused
    before any of them is converted."""
    return request.app.state.components.scoring.compact(model_of(request), document)


class ScoreRoute(OrjsonRoute):
    body_check = staticmethod(check_value_count)
    compact = staticmethod(compact_body)


router = APIRouter(
    prefix="/v1", tags=["scoring"], dependencies=[ReadAccess], route_class=ScoreRoute
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
