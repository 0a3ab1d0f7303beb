"""/openapi.json, /docs and /redoc behind the key when reads need it (LVAD_AUTH_READS)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.http.deps import ReadAccess


def guarded_router(app: FastAPI) -> APIRouter:
    router = APIRouter(dependencies=[ReadAccess], include_in_schema=False)

    @router.get("/openapi.json")
    async def get_openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def get_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @router.get("/redoc")
    async def get_redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    return router
