"""How the app answers errors, and the OpenAPI document's view of authentication.

Every failure answers the documented JSON error body ``{"error", "message", "field"}``:
the service's own errors (``LvadError`` and subclasses, which carry their status),
request validation (422), and Starlette's HTTP errors (404, 405, 413, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.http.deps import ReadAccess
from model.errors import LvadError, shorten

log = logging.getLogger("lvad")


MESSAGE_LIMIT = 1000  # characters of a message; input echoed in one is cut shorter already


def error_response(exc: LvadError) -> JSONResponse:
    """The error body; ``Retry-After`` where the error says when to come back."""
    field = None if exc.field is None else shorten(exc.field)
    retry_after = getattr(exc, "retry_after", None)
    return JSONResponse(
        {"error": exc.code, "message": shorten(exc.message, MESSAGE_LIMIT), "field": field},
        status_code=exc.status_code,
        headers={"Retry-After": str(retry_after)} if retry_after else None,
    )


def validation_body(errors: Sequence[Any]) -> dict:
    """Pydantic's errors without the offending input (it may hold NaN, or be huge)."""
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    field = ".".join(str(part) for part in first["loc"] if part != "body") or None
    message = f"{field}: {first['msg']}" if field else first["msg"]
    if len(detail) > 1:
        message += f" (and {len(detail) - 1} more)"
    return {"error": "validation_error", "message": message, "field": field, "detail": detail}


def allowed_methods(routers: Sequence[APIRouter], path: str) -> list[str]:
    """Every method some route of ``routers`` answers on ``path`` (for a 405's Allow)."""
    methods = {
        method
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.path_regex.match(path)
        for method in route.methods
    }
    return sorted(methods)


def open_reads_in_schema(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Drop the key from the reads' OpenAPI operations: with LVAD_AUTH_READS=false
    they need none, and a schema that demands it would describe another server."""
    reads = [
        (route.path_format, method.lower())
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and ReadAccess in route.dependencies
        for method in route.methods
    ]
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            paths = generate()["paths"]
            for path, method in reads:
                paths[path][method].pop("security", None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    @app.exception_handler(LvadError)
    async def handle_lvad_error(request: Request, exc: LvadError) -> JSONResponse:
        if exc.status_code >= 500 and exc.status_code != 503:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(exc)

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Anything unforeseen still answers the error body (Starlette logs the traceback)."""
        return JSONResponse(
            {"error": "internal_error", "message": "internal server error", "field": None},
            status_code=500,
        )

    @app.exception_handler(RequestValidationError)
    async def handle_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": f"http_{exc.status_code}", "message": str(exc.detail), "field": None}
        headers = dict(exc.headers or {})
        # Starlette's Allow names the methods of one route of the path only
        if exc.status_code == 405 and (methods := allowed_methods(routers, request.url.path)):
            headers["Allow"] = ", ".join(methods)
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
