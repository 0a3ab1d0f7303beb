"""One error hierarchy for the whole project.

Every error the core raises on purpose derives from :class:`LvadError` and
carries the HTTP status a service should answer with, so the web layer maps
all of them with a single handler and the core stays free of web code.
"""

from __future__ import annotations


class LvadError(Exception):
    """Base class: a message meant for the user and the status it maps to."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class DataError(LvadError):
    """Input data is unusable: wrong shape, non-numeric, all missing, too short."""

    status_code = 422
    code = "invalid_data"


class FeatureMismatchError(DataError):
    """The variables given at scoring time do not match the ones the model was trained on."""

    code = "feature_mismatch"


class ArtifactError(LvadError):
    """A model artifact is missing, truncated, corrupted or of an unknown format."""

    status_code = 422
    code = "invalid_artifact"


class TrainingError(LvadError):
    """Training could not produce a model (e.g. too little data for one window)."""

    status_code = 422
    code = "training_failed"


class TrainingCancelled(LvadError):
    """Training was stopped on request before it finished."""

    status_code = 409
    code = "training_cancelled"


def shorten(text: object, limit: int = 120) -> str:
    """``text`` as a string of at most ``limit`` characters, for echoing input in messages."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}... ({len(text):,} characters)"


def name_list(names: list[str] | tuple[str, ...], limit: int = 8) -> str:
    """``a, b, c and 31,997 more``: names from the input, each shortened, a few at most."""
    shown = ", ".join(shorten(name, 60) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit:,} more"
