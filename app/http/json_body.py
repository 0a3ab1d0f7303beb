"""Fast JSON bodies: orjson parsing and number lists turned straight into numpy.

A 512-window request holds ~100k numbers. Parsing them with the standard library
and validating each as a Pydantic ``float`` cost more server time than scoring
them (docs/benchmarks.md); here the body is parsed by orjson and the windows
become one ``float64`` array in a single numpy call, a series' values one array
per variable. The rules stay those of ``list[list[list[float]]]`` and
``list[float | None]`` fields: numbers only (and nulls, in a series: missing
values), equal shapes, finite values; a refusal names where the problem is.

Memory: parsed, each number is a Python object of ~32 bytes, several times its
JSON text. A route may check the raw body first (``OrjsonRoute.body_check``: the
score route refuses a body with more values than its limits allow before parsing
it) and compact the parsed document (``OrjsonRoute.compact``: its number lists
replaced by arrays at once), so those objects live only while the body is parsed.
A body that is not JSON is a 400.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from anyio import CapacityLimiter, to_thread
from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

THREAD_PARSE_BYTES = 64 * 1024  # smaller bodies parse on the loop: a thread hop costs more
PARSE_THREADS = 2  # large bodies parsed at once


class OrjsonRequest(Request):
    compact: Callable[[Request, Any], Any] | None = None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = self.parse(await self.body())
        return self._json

    def parse(self, body: bytes) -> Any:
        document = parse_json(body)
        return document if self.compact is None else self.compact(self, document)


def parse_json(body: bytes) -> Any:
    """The document; HTTPException 400 if ``body`` is not JSON (or nests too deep)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        # orjson refuses NaN/Infinity literals; the standard parser reads them, so
        # validation can name the field that holds one
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # incl. JSONDecodeError, overlong integers
        reason = str(exc)[:200] if isinstance(exc, ValueError) else "nested too deep"
        raise HTTPException(400, f"the body is not valid JSON: {reason}") from None


class OrjsonRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by orjson; subclasses may set ``body_check``
    (called with the request and the raw body before it is parsed) and ``compact``
    (called with the request and the parsed document; it may raise the app's errors).
    A body over ``THREAD_PARSE_BYTES`` is parsed and compacted in a worker thread: the
    event loop, which answers the health probes, only waits for the rest."""

    body_check: Callable[[Request, bytes], None] | None = None
    compact: Callable[[Request, Any], Any] | None = None

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        check, compact = type(self).body_check, type(self).compact

        async def parse_with_orjson(request: Request) -> Any:
            lean = OrjsonRequest(request.scope, request.receive)
            lean.compact = compact
            body = await lean.body()
            if check is not None:
                check(lean, body)  # raises the app's own errors
            if body and is_json(lean.headers.get("content-type")):  # its errors are the app's
                if len(body) > THREAD_PARSE_BYTES:
                    limiter = parse_limiter(request)
                    lean._json = await to_thread.run_sync(lean.parse, body, limiter=limiter)
                else:
                    lean._json = lean.parse(body)
            return await handler(lean)

        return parse_with_orjson


def parse_limiter(request: Request) -> CapacityLimiter:
    """The app's limit on bodies parsed at once: more threads would only take turns at
    the interpreter lock, and the event loop would wait longer for its own turn."""
    state = request.app.state
    if getattr(state, "parse_limiter", None) is None:
        state.parse_limiter = CapacityLimiter(PARSE_THREADS)
    return state.parse_limiter


def is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON: ``application/json`` or ``application/*+json``."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


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
    if isinstance(value, np.ndarray) and value.dtype == np.float64 and value.ndim == ndim:
        return value  # converted by ``compact_score_body`` already
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


def series_values(value: Any) -> np.ndarray:
    """A list of finite numbers and nulls -> (n,) float64, NaN for null (missing)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float64 and value.ndim == 1:
        return value  # converted by ``compact_score_body`` already
    if not isinstance(value, list):
        raise PydanticCustomError("series_values", "expected a list of numbers or nulls")
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is not None and array.dtype.kind in "iuf" and array.ndim == 1:
        array = array.astype(np.float64, copy=False)  # no null: numbers only
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise PydanticCustomError(
                "series_values", f"[{int(bad[0])}] is not a finite (float64) number"
            )
        return array
    return np.fromiter(
        (_value_or_nan(item, i) for i, item in enumerate(value)), np.float64, len(value)
    )


def _value_or_nan(item: Any, index: int) -> float:
    if item is None:
        return np.nan
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise PydanticCustomError(
            "series_values", f"[{index}] is {type(item).__name__}, not a number or null"
        )
    try:
        number = float(item)
    except OverflowError:
        number = np.inf
    if not np.isfinite(number):
        raise PydanticCustomError("series_values", f"[{index}] is not a finite (float64) number")
    return number


SERIES_VALUES_SCHEMA = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "null"}]}}

SeriesValues = Annotated[
    np.ndarray,
    PlainValidator(series_values),
    WithJsonSchema(SERIES_VALUES_SCHEMA, mode="validation"),
]
"""One variable's values: finite numbers, null for missing, converted to (n,) float64."""


def compact_score_body(document: Any, check_names: Callable[[list[str], str], None]) -> Any:
    """A parsed score body with its number lists replaced by float64 arrays, each as soon
    as it is converted (so the parsed lists are freed one by one); a list that does not
    convert stays, for validation to name its problem. ``check_names(names, field)``
    sees a series' variable names first, and may refuse them before any conversion."""
    if not isinstance(document, dict):
        return document
    if "windows" in document:  # series and context do not go with windows: validation says so
        if isinstance(document["windows"], list):
            with contextlib.suppress(PydanticCustomError):
                document["windows"] = number_array(document["windows"], ndim=3)
        return document
    for key in ("series", "context"):
        part = document.get(key)
        variables = part.get("variables") if isinstance(part, dict) else None
        if isinstance(variables, dict):
            check_names(list(variables), key)
            for name, values in variables.items():
                with contextlib.suppress(PydanticCustomError):
                    variables[name] = series_values(values)
    return document
