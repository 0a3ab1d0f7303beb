"""The scoring pipeline: a score request -> arrays -> the model -> the response body.

``ScoringPipeline.score`` is the one path from ``POST /v1/score`` (and a named
model's ``/score``) to the model: it reads the model once, turns the request into
arrays in the model's variable order, hands them to the backend chosen at start-up
(``app/scoring/backends.py``), records the metrics and builds the response from its
documented models (``app/http/scores.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from starlette.concurrency import run_in_threadpool

from app.errors import LimitError
from app.http.json_body import compact_score_body
from app.http.schemas import ScoreRequest, SeriesData
from app.http.scores import ScoreResponse, StepScores, render
from app.ops.metrics import ServiceMetrics
from app.scoring.backends import ScoringBackend, SeriesOptions
from app.scoring.models import LoadedModels, ServedModel
from app.settings import Settings
from model.alarm import Scored
from model.data import order_columns, prepare_frame
from model.errors import DataError, FeatureMismatchError, name_list

# responses of more values than this are built in a worker thread, off the event loop
INLINE_VALUES = 4096
VALUE_SLACK = 10_000  # commas a body may hold beyond its values: names, other fields


class ScoringPipeline:
    def __init__(
        self,
        models: LoadedModels,
        backend: ScoringBackend,
        metrics: ServiceMetrics,
        settings: Settings,
    ) -> None:
        self.models = models
        self.backend = backend
        self.metrics = metrics
        self.settings = settings

    async def score(self, name: str, request: ScoreRequest) -> bytes:
        """The JSON body of the ``ScoreResponse`` to ``request`` by model ``name``."""
        served = await self.served(name)
        if request.series is not None:
            values, stamps, options = await run_in_threadpool(self.series_input, request, served)
            timed = await self.backend.score_series(served, values, options)
            self.observe(served, timed.scored)
            return await run_in_threadpool(series_body, request, served, timed.scored, stamps)
        windows = self.windows_input(request, served)
        timed = await self.backend.score_windows(served, windows)
        self.observe(served, timed.scored)
        if timed.scored.score.size <= INLINE_VALUES:
            return windows_body(request, served, timed.scored)
        return await run_in_threadpool(windows_body, request, served, timed.scored)

    async def served(self, name: str) -> ServedModel:
        """The model ``name`` serves now; loaded from its file (off the loop) if need be."""
        return self.models.current(name) or await run_in_threadpool(self.models.get, name)

    # ------------------------------------------------------------------ the raw body
    def check_body(self, name: str, body: bytes) -> None:
        """Refuse, before parsing, a score body for model ``name`` with more values than
        any request within the limits has: LVAD_MAX_SERIES_POINTS points of the model's
        variables and a timestamp each. Values are counted by their commas (a C loop over
        the bytes); parsed, each would take ~32 bytes. A model not loaded yet is not
        loaded for this: its request is checked after parsing."""
        served = self.models.current(name)
        if served is None:
            return
        width = served.detector.n_features
        budget = self.settings.max_series_points * (width + 1)
        values = body.count(b",") + 1
        if values > budget + VALUE_SLACK:
            raise LimitError(
                f"the body holds about {values:,} values; with model {name!r}'s {width} "
                f"variables a request may hold at most {budget:,} (LVAD_MAX_SERIES_POINTS = "
                f"{self.settings.max_series_points:,} points, each with a timestamp)",
                field="body",
            )

    def compact(self, name: str, document: Any) -> Any:
        """A parsed score body with its number lists as arrays (app/http/json_body.py); a
        series whose variables are not the model's is refused first (FeatureMismatch)."""
        served = self.models.current(name)

        def check_names(names: list[str], field: str) -> None:
            if served is not None:
                check_variables(names, served.detector.feature_names, field)

        return compact_score_body(document, check_names)

    # ------------------------------------------------------------------ request -> arrays
    def windows_input(self, request: ScoreRequest, served: ServedModel) -> np.ndarray:
        """The request's windows (N, T, D) in the model's variable order, within limits."""
        windows = request.windows
        assert windows is not None  # (N, T, D), validated by the schema
        count, length, _ = windows.shape
        s, detector = self.settings, served.detector
        if count > s.max_windows:
            raise LimitError(f"{count} windows; the limit is {s.max_windows}", field="windows")
        if length > s.max_window_length:
            raise LimitError(
                f"windows of {length} steps; the limit is {s.max_window_length}", field="windows"
            )
        if count * length > s.max_series_points:
            raise LimitError(
                f"{count} windows x {length} steps = {count * length:,} points; the limit is "
                f"{s.max_series_points:,} (LVAD_MAX_SERIES_POINTS)",
                field="windows",
            )
        if length < detector.window:
            raise DataError(
                f"windows have {length} steps; the model needs at least {detector.window}",
                field="windows",
            )
        return order_columns(windows, request.variables, detector.feature_names, "windows")

    def series_input(
        self, request: ScoreRequest, served: ServedModel
    ) -> tuple[np.ndarray, np.ndarray | None, SeriesOptions]:
        """The series (n, D) in original units, its timestamps, and how to score it."""
        series = request.series
        assert series is not None
        total = series.length + (request.context.length if request.context else 0)
        if total > self.settings.max_series_points:
            raise LimitError(
                f"{total} points with context; the limit is {self.settings.max_series_points}",
                field="series",
            )
        names = served.detector.feature_names
        values, stamps = series_values(series, names, "series")
        context = None
        if request.context is not None:
            context, context_stamps = series_values(request.context, names, "context")
            if (
                stamps is not None
                and context_stamps is not None
                and context_stamps[-1] >= stamps[0]
            ):
                raise DataError("context must end before the series starts", field="context")
        return values, stamps, SeriesOptions(request.stride, request.causal, context)

    # ------------------------------------------------------------------ metrics
    def observe(self, served: ServedModel, scored: Scored) -> None:
        """Per request: the scores against the threshold and who was at fault."""
        self.metrics.observe_scores(served.name, scored)
        if scored.is_anomaly.any():
            names = served.detector.feature_names
            top = scored.top(1)[..., 0][scored.is_anomaly]
            for index, count in zip(*np.unique(top, return_counts=True), strict=True):
                self.metrics.variable_anomalies.labels(
                    model=served.name, variable=names[index]
                ).inc(int(count))


# ---------------------------------------------------------------------- arrays -> response
def windows_body(request: ScoreRequest, served: ServedModel, scored: Scored) -> bytes:
    """The response to scored windows (arrays (N, T[, D])): one ``StepScores`` each."""
    detector = served.detector
    steps = StepScores.batch(
        scored,
        detector.window_events(scored),
        detector.feature_names,
        request.explain,
        request.top_k or detector.config.top_k,
    )
    return render(envelope(served, windows=steps))


def series_body(
    request: ScoreRequest, served: ServedModel, scored: Scored, stamps: np.ndarray | None
) -> bytes:
    """The response to a scored series (arrays (n[, D])), with its timestamps if given."""
    one = scored.pick(np.newaxis)
    detector = served.detector
    (steps,) = StepScores.batch(
        one,
        detector.window_events(one),
        detector.feature_names,
        request.explain,
        request.top_k or detector.config.top_k,
    )
    if stamps is not None:
        steps = steps.with_timestamps(stamps)
    return render(envelope(served, series=steps))


def envelope(served: ServedModel, **parts: object) -> ScoreResponse:
    """The response around per-step results: which model scored, and its terms."""
    detector = served.detector
    return ScoreResponse.model_construct(
        model=served.name,
        model_version=served.version,
        window=detector.window,
        threshold=detector.threshold.value,
        variables=detector.feature_names,
        **{"windows": None, "series": None, **parts},
    )


def check_variables(given: list[str], names: list[str], field: str) -> None:
    """FeatureMismatchError unless ``given`` are exactly the model's variables (any order)."""
    if len(given) != len(names) or set(given) != set(names):
        raise FeatureMismatchError(
            f"{field}: variables {name_list(given)} do not match the model's: "
            f"{name_list(names, 20)}",
            field=f"{field}.variables",
        )


def series_values(
    data: SeriesData, names: list[str], field: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """A request's series as (n, D) values in ``names``' order and its timestamps (or None);
    the cheap checks (how many variables, which) before any work that grows with them."""
    check_variables(list(data.variables), names, field)
    frame = pd.DataFrame(dict(data.variables))  # float64 arrays, NaN where missing
    if data.timestamps is not None:
        stamps = pd.DatetimeIndex(pd.to_datetime(data.timestamps, utc=True)).tz_convert(None)
        frame.insert(0, "__timestamp__", stamps)
    try:
        table = prepare_frame(
            frame,
            feature_names=names,
            timestamp_column="__timestamp__" if data.timestamps else None,
        )
    except DataError as exc:
        message = f"{field}: {exc.message}".replace("__timestamp__", "timestamps")
        raise type(exc)(message, field=f"{field}.{exc.field or 'variables'}") from exc
    return table.values, table.timestamps
