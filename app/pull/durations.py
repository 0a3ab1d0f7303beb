"""Prometheus-style durations: ``15s``, ``1m30s``, ``24h``, ``7d``, ``500ms``.

The units are Prometheus's own (``y`` = 365 days, ``w`` = 7 days), written from the
largest to the smallest, each at most once, integers only.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0,
         "s": 1.0, "ms": 0.001}  # fmt: skip
_PATTERN = re.compile("".join(rf"(?:(?P<{u}>\d+){u})?" for u in UNITS))


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; ValueError naming the text if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as '15s', '1m30s' or '7d', got {text!r}")
    match = _PATTERN.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. '15s', '1m30s', '24h', '7d'")
    seconds = sum(int(v) * UNITS[u] for u, v in match.groupdict().items() if v is not None)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (``90.0`` -> ``1m30s``)."""
    millis = round(seconds * 1000)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = round(UNITS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# a duration field of the detectors file: written as text, held as seconds (float)
Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
