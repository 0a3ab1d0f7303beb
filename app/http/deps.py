"""Dependencies every route takes through ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.components import Components
from app.errors import AuthError, ForbiddenError
from app.registry.records import MODEL_NAME

bearer = HTTPBearer(auto_error=False, description="The service's API key (LVAD_API_KEY).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, two thread hand-offs per request for what takes microseconds.
async def get_components(request: Request) -> Components:
    return request.app.state.components


ComponentsDep = Annotated[Components, Depends(get_components)]
ModelName = Annotated[
    str,
    Path(
        pattern=MODEL_NAME,
        description="The model's name: 1-63 of a-z, 0-9, '_' and '-', starting with a letter.",
    ),
]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="A version of the model.")]


def check_key(components: Components, credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = components.settings.api_key
    if expected is None or not expected.get_secret_value().strip():  # Settings refuses blanks
        raise ForbiddenError(
            "this endpoint needs an API key and none is configured (set LVAD_API_KEY)"
        )
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise AuthError("missing or wrong API key (Authorization: Bearer <key>)")


async def require_write(components: ComponentsDep, credentials: Credentials) -> None:
    check_key(components, credentials)


async def require_read(components: ComponentsDep, credentials: Credentials) -> None:
    if components.settings.auth_reads:
        check_key(components, credentials)


WriteAccess = Depends(require_write)
ReadAccess = Depends(require_read)
