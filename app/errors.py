"""Service errors: the same hierarchy as the core (``LvadError``), with HTTP statuses."""

from __future__ import annotations

from model.errors import LvadError


class NotFoundError(LvadError):
    status_code = 404
    code = "not_found"


class AuthError(LvadError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(LvadError):
    status_code = 403
    code = "forbidden"


class ConflictError(LvadError):
    status_code = 409
    code = "conflict"


class PayloadTooLargeError(LvadError):
    status_code = 413
    code = "payload_too_large"


class LimitError(LvadError):
    """A request within the body limit that asks for more than the configured limits."""

    status_code = 422
    code = "limit_exceeded"


class ModelNotReady(LvadError):
    status_code = 503
    code = "model_not_ready"


class ScoringUnavailable(LvadError):
    """The scoring process stopped during a request; a fresh one is starting."""

    status_code = 503
    code = "scoring_unavailable"
