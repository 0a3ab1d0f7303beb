"""The request body limit (``LVAD_MAX_BODY_BYTES``), answered in the service's error shape.

FastAPI's own ``max_body_size`` sends a plain-text 413 from outside the exception
handlers whenever the declared length is too large; this middleware instead fails
the body read with an HTTPException, which FastAPI re-raises unchanged and the
app's handler answers like every other error (``{"error": "http_413", ...}``).
A declared Content-Length over the limit fails before a byte of the body is read.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = HTTPException(
            413, f"Content Too Large: request bodies are limited to {self.max_bytes} bytes"
        )
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, receive_within_limit, send)
