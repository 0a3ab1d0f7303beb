"""Service errors: the same hierarchy as the core (``LvadError``), with HTTP statuses."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from model.errors import LvadError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL = 13
PG_DISK_FULL = "53100"


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


def is_full_disk(exc: BaseException) -> bool:
    """A write that failed for want of space: a file (ENOSPC, EDQUOT), SQLite's
    SQLITE_FULL, or PostgreSQL's disk_full (53100)."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_DISK
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
    return getattr(exc, "sqlstate", None) == PG_DISK_FULL


@contextmanager
def full_disk_is_507(what: str) -> Iterator[None]:
    """A write that runs out of space raises StorageFull (the database's own errors
    arrive wrapped by SQLAlchemy: its ``orig`` is looked at)."""
    try:
        yield
    except Exception as exc:
        if is_full_disk(exc) or is_full_disk(getattr(exc, "orig", None) or exc):
            raise StorageFull(f"{what}: no space left on the store's disk") from exc
        raise
