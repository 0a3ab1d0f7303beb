"""Dependencies every route takes through ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import AuthError, ForbiddenError
from app.service import Service

bearer = HTTPBearer(auto_error=False, description="The service's API key (LVAD_API_KEY).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, two thread hand-offs per request for what takes microseconds.
async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def check_key(service: Service, credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = service.settings.api_key
    if expected is None or not expected.get_secret_value().strip():  # Settings refuses blanks
        raise ForbiddenError(
            "this endpoint needs an API key and none is configured (set LVAD_API_KEY)"
        )
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise AuthError("missing or wrong API key (Authorization: Bearer <key>)")


async def require_write(service: ServiceDep, credentials: Credentials) -> None:
    check_key(service, credentials)


async def require_read(service: ServiceDep, credentials: Credentials) -> None:
    if service.settings.auth_reads:
        check_key(service, credentials)


WriteAccess = Depends(require_write)
ReadAccess = Depends(require_read)
