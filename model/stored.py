"""Values read back from a stored state (JSON): checked for their type, so that a
malformed state is refused (TypeError, which the callers turn into ArtifactError)
rather than coerced (``float(True)``, ``int("3")``)."""

from __future__ import annotations

import math
from typing import Any


def stored_number(value: Any) -> float:
    """A stored number; not a bool or text, which float() would take (TypeError)."""
    if isinstance(value, bool | str):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def stored_integer(value: Any) -> int:
    """A stored count or position; not a bool, text or a float, which int() would take
    (TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def stored_bool(value: Any) -> bool:
    """A stored flag; not a number or text, which bool() would take (TypeError)."""
    if not isinstance(value, bool):
        raise TypeError(f"not a bool: {value!r}")
    return value


def stored_level(value: Any) -> float | None:
    """A stored level: None, or a number (``stored_number``)."""
    return None if value is None else stored_number(value)


def nulls(values: list[float]) -> list[float | None]:
    """NaN (a point left out) as JSON's null."""
    return [None if v != v else v for v in values]


def stored_nans(values: list[Any]) -> list[float]:
    """A stored list of ``nulls``: null back as NaN, the rest numbers (``stored_number``)."""
    return [math.nan if v is None else stored_number(v) for v in values]
