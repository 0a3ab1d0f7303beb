"""Fast JSON bodies: orjson parsing and nested number lists turned straight into numpy.

A 512-window request holds ~100k numbers. Parsing them with the standard library
and validating each as a Pydantic ``float`` cost more server time than scoring
them (docs/benchmarks.md); here the body is parsed by orjson and the windows
become one ``float64`` array in a single numpy call. The rules stay those of a
``list[list[list[float]]]`` field: numbers only (no strings, nulls or nested
objects), equal shapes, finite values; a refusal names where the problem is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                # orjson refuses NaN/Infinity literals; the standard parser reads them,
                # so validation can name the field that holds one (and real garbage
                # still raises json.JSONDecodeError, which FastAPI answers with 422)
                self._json = json.loads(body)
        return self._json


class OrjsonRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by orjson."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Any:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson


def _first_problem(value: Any, depth: int, path: str = "") -> str:
    """Where a nested list fails to be a regular array of numbers (for the message)."""
    if depth == 0:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path or 'value'} is {type(value).__name__}, not a number"
        try:
            finite = np.isfinite(np.float64(value))
        except OverflowError:
            finite = False
        return "" if finite else f"{path or 'value'} is not a finite (float64) number"
    if not isinstance(value, list) or not value:
        kind = "empty" if value == [] else type(value).__name__
        return f"{path or 'value'} is {kind}, expected a non-empty list"
    lengths = {len(item) for item in value if isinstance(item, list)}
    if depth > 1 and len(lengths) > 1:
        return f"{path or 'value'} is ragged: lengths {sorted(lengths)}"
    for index, item in enumerate(value):
        problem = _first_problem(item, depth - 1, f"{path}[{index}]")
        if problem:
            return problem
    return ""


def number_array(value: Any, ndim: int) -> np.ndarray:
    """Nested lists of finite numbers, ``ndim`` deep and regular -> float64 array."""
    try:
        array = np.array(value) if isinstance(value, list) else None
    except (ValueError, TypeError, OverflowError):  # ragged
        array = None
    ok = (
        array is not None
        and array.dtype.kind in "iuf"  # strings, nulls, objects and huge ints are not
        and array.ndim == ndim
        and array.size > 0
    )
    if ok:
        array = array.astype(np.float64, copy=False)
        ok = bool(np.isfinite(array).all())
    if not ok:
        problem = _first_problem(value, ndim) or f"expected {ndim} nested lists of numbers"
        raise PydanticCustomError("number_array", problem)
    return array


def _windows(value: Any) -> np.ndarray:
    return number_array(value, ndim=3)


WINDOWS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
}

Windows = Annotated[
    np.ndarray, PlainValidator(_windows), WithJsonSchema(WINDOWS_SCHEMA, mode="validation")
]
"""N windows of T rows of D finite numbers, validated and converted to (N, T, D) float64."""
