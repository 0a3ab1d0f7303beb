"""Service errors: the same hierarchy as the core (``LvadError``), with HTTP statuses."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from model.errors import LvadError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = 13


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


class TooManyJobs(LvadError):
    """The job queue is full (LVAD_MAX_QUEUED_JOBS)."""

    status_code = 429
    code = "too_many_jobs"
    retry_after = 30  # seconds, the Retry-After header


class Overloaded(LvadError):
    """The micro-batch queue is full, or a request waited in it past its deadline."""

    status_code = 503
    code = "overloaded"
    retry_after = 1


class StorageFull(LvadError):
    """The store's disk is full: nothing was kept."""

    status_code = 507
    code = "insufficient_storage"


@contextmanager
def full_disk_is_507(what: str) -> Iterator[None]:
    """A write that runs out of space (a file, or the registry) raises StorageFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        raise StorageFull(f"{what}: no space left on the store's disk") from exc
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) != SQLITE_FULL:
            raise
        raise StorageFull(f"{what}: no space left on the store's disk") from exc
