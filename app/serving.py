"""The active model and scoring requests against it.

``ModelHolder`` keeps the active (version, detector) pair behind one reference:
a swap replaces it only after the new detector is fully loaded, and every
request reads it once, so no request mixes two models.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.arrays import compact_score_body
from app.errors import LimitError, ModelNotReady
from app.metrics import ServiceMetrics
from app.schemas import ScoreRequest, SeriesData
from app.scoring_process import ScoringProcess
from app.settings import Settings
from model.data import prepare_frame
from model.detector import Detector, Scored
from model.errors import DataError, FeatureMismatchError, name_list
from model.events import Event
from model.scoring import top_variables

# Calls on fewer rows (windows, or points of a series) than this run in the server's
# process even when there is a scoring process: their model time is a few ms, and the
# round trip to the child cost more than the lock contention it avoids (1-window
# requests from 32 clients, micro-batches of ~6-14 windows: docs/benchmarks.md).
LOCAL_ROWS = 32
VALUE_SLACK = 10_000  # commas a body may hold beyond its values: names, other fields


@dataclass(frozen=True)
class ServedModel:
    version: int
    detector: Detector
    path: Path | None = None  # its artifact: how a scoring process loads the same model


class ModelHolder:
    def __init__(self) -> None:
        self._current: ServedModel | None = None

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def require(self) -> ServedModel:
        served = self._current
        if served is None:
            raise ModelNotReady("no model is loaded yet; see /readyz")
        return served

    def swap(self, served: ServedModel) -> None:
        self._current = served  # one reference assignment: atomic for readers


@dataclass(frozen=True)
class BatchResult:
    served: ServedModel  # the model that scored it
    scored: Scored  # arrays of one window: (T,) and (T, D)


def contribution_list(names: list[str], shares: np.ndarray, order: np.ndarray) -> list[dict]:
    return [{"variable": names[i], "share": float(shares[i])} for i in order if shares[i] > 0]


def events_payload(scored: Scored, events: list[Event], names: list[str], top_k: int) -> list[dict]:
    """The events of one window or series (arrays (n[, D])): indices inclusive."""
    return [
        {
            "start": event.start,
            "end": event.end - 1,
            "peak": event.peak,
            "alarm_score": float(scored.alarm_score[event.peak]),
            "severity": float(scored.severity[event.peak]),
            "top_variables": contribution_list(
                names, event.contributions, top_variables(event.contributions, top_k)
            ),
            "start_time": None,
            "end_time": None,
        }
        for event in events
    ]


def windows_payload(scored: Scored, detector: Detector, explain: str, top_k: int) -> list[dict]:
    """Per-step arrays of N windows (arrays (N, T[, D])): one dict per window, for orjson.

    Arrays stay numpy (contiguous rows serialize directly); only the explained
    steps' top variables and the events are built as Python objects.
    """
    names = detector.feature_names
    n, steps = scored.score.shape
    if explain == "none":
        explained = np.zeros((n, steps), dtype=bool)
    else:
        explained = scored.is_anomaly if explain == "anomalies" else np.ones((n, steps), bool)
    tops: list[list[list[dict] | None]] = [[None] * steps for _ in range(n)]
    rows, cols = np.nonzero(explained)
    if len(rows):
        shares = scored.contributions[rows, cols]  # (E, D) for the E explained steps
        for row, col, share, order in zip(
            rows.tolist(), cols.tolist(), shares, top_variables(shares, top_k), strict=True
        ):
            tops[row][col] = contribution_list(names, share, order)
    events = [
        events_payload(scored.pick(i), found, names, top_k) if found else []
        for i, found in enumerate(detector.window_events(scored))
    ]
    arrays = {
        name: np.ascontiguousarray(values)  # (N, T); orjson needs contiguous rows
        for name, values in (
            ("score", scored.score),
            ("alarm_score", scored.alarm_score),
            ("log_prob", scored.log_prob.sum(axis=-1)),
            ("kl", scored.kl),
            ("severity", scored.severity),
            ("is_anomaly", scored.is_anomaly),
            ("warm_up", scored.warm_up),
        )
    }
    anomalies = scored.is_anomaly.sum(axis=-1).tolist()
    return [
        {
            **{name: values[i] for name, values in arrays.items()},
            "top_variables": tops[i],
            "timestamps": None,
            "anomalies": anomalies[i],
            "events": events[i],
        }
        for i in range(n)
    ]


def steps_payload(
    scored: Scored, detector: Detector, explain: str, top_k: int, timestamps: np.ndarray | None
) -> dict:
    """Per-step arrays of one window or series (arrays (n[, D]))."""
    body = windows_payload(scored.pick(np.newaxis), detector, explain, top_k)[0]
    if timestamps is not None:
        stamps = pd.DatetimeIndex(timestamps).tz_localize("UTC")
        body["timestamps"] = stamps.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
        for event in body["events"]:
            event["start_time"] = body["timestamps"][event["start"]]
            event["end_time"] = body["timestamps"][event["end"]]
    return body


def envelope(served: ServedModel, **parts: object) -> dict:
    """The response body around per-step results: which model scored, and its terms."""
    detector = served.detector
    return {
        "model_version": served.version,
        "window": detector.window,
        "threshold": detector.threshold.value,
        "variables": detector.feature_names,
        **parts,
    }


class Scorer:
    """Turns score requests into model calls and response bodies."""

    def __init__(
        self,
        holder: ModelHolder,
        metrics: ServiceMetrics,
        settings: Settings,
        process: ScoringProcess | None = None,
    ) -> None:
        self.holder = holder
        self.metrics = metrics
        self.settings = settings
        self.process = process  # where the model runs; None: in this process
        # one model call at a time: torch already uses every core for one call, and
        # concurrent calls only oversubscribe the threads (measured: half the throughput)
        self.model_lock = threading.Lock()

    def run_model(
        self, served: ServedModel, method: str, *args: Any, **kwargs: Any
    ) -> tuple[Scored, float]:
        """``served.detector.<method>(...)`` and the seconds the model took (not counting
        the wait for other calls); in the scoring process if there is one and the call
        is not small. The first argument is the array of windows or points."""
        process = self.process
        if process is not None and served.path is not None and len(args[0]) >= LOCAL_ROWS:
            return process.call(served.path, method, *args, **kwargs)
        with self.model_lock:
            started = time.perf_counter()
            scored = getattr(served.detector, method)(*args, **kwargs)
            return scored, time.perf_counter() - started

    def check_body(self, body: bytes) -> None:
        """Refuse, before parsing, a score body with more values than any request within
        the limits has: LVAD_MAX_SERIES_POINTS points of the model's variables and a
        timestamp each. Values are counted by their commas (a C loop over the bytes);
        parsed, each would take ~32 bytes."""
        served = self.holder.current
        if served is None:
            return  # no model: the request is refused (503) anyway, after parsing
        budget = self.settings.max_series_points * (served.detector.n_features + 1)
        values = body.count(b",") + 1
        if values > budget + VALUE_SLACK:
            raise LimitError(
                f"the body holds about {values:,} values; with this model's "
                f"{served.detector.n_features} variables a request may hold at most "
                f"{budget:,} (LVAD_MAX_SERIES_POINTS = {self.settings.max_series_points:,} "
                "points, each with a timestamp)",
                field="body",
            )

    def compact(self, document: Any) -> Any:
        """A parsed score body with its number lists as arrays (app/arrays.py); a series
        whose variables are not the served model's is refused first (FeatureMismatch)."""
        served = self.holder.current

        def check_names(names: list[str], field: str) -> None:
            if served is not None:
                self.check_variables(names, served.detector, field)

        return compact_score_body(document, check_names)

    @staticmethod
    def check_variables(names: list[str], detector: Detector, field: str) -> None:
        if len(names) != detector.n_features or set(names) != set(detector.feature_names):
            raise FeatureMismatchError(
                f"{field}: variables {name_list(names)} do not match the model's: "
                f"{name_list(detector.feature_names, 20)}",
                field=f"{field}.variables",
            )

    def check_windows(self, request: ScoreRequest, detector: Detector) -> np.ndarray:
        windows = request.windows
        assert windows is not None  # (N, T, D), validated by the schema
        count, length, _ = windows.shape
        s = self.settings
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
        return self.order_columns(windows, request.variables, detector)

    @staticmethod
    def order_columns(
        array: np.ndarray, variables: list[str] | None, detector: Detector
    ) -> np.ndarray:
        names = detector.feature_names
        if variables is None:
            if array.shape[-1] != len(names):
                raise FeatureMismatchError(
                    f"windows have {array.shape[-1]} variables; the model expects {len(names)}: "
                    f"{', '.join(names)}",
                    field="windows",
                )
            return array
        if len(variables) != array.shape[-1]:
            raise FeatureMismatchError(
                f"{len(variables)} names in `variables` for {array.shape[-1]} columns",
                field="variables",
            )
        if len(variables) != len(names) or sorted(variables) != sorted(names):
            raise FeatureMismatchError(
                f"variables {name_list(variables)} do not match the model's: "
                f"{name_list(names, 20)}",
                field="variables",
            )
        position = {name: i for i, name in enumerate(variables)}
        return array[..., [position[name] for name in names]]

    def score_batch(self, windows: np.ndarray) -> tuple[ServedModel, Scored]:
        """Score (N, T, D) windows of the model's length with the current model."""
        served = self.holder.require()
        scored, seconds = self.run_model(served, "score_windows", windows)
        self.observe(scored, len(windows), seconds, served)
        return served, scored

    def run_windows(self, windows: np.ndarray) -> list[BatchResult]:
        """``score_batch``, split into one result per window (for the micro-batcher)."""
        served, scored = self.score_batch(windows)
        return [BatchResult(served, scored.pick(i)) for i in range(len(windows))]

    def observe(self, scored: Scored, windows: int, seconds: float, served: ServedModel) -> None:
        m = self.metrics
        m.inference.observe(seconds)
        m.batch_size.observe(windows)
        m.windows.inc(windows)
        m.observe_scores(
            scored.alarm_score.ravel(),
            scored.severity.ravel(),
            scored.is_anomaly.ravel(),
            scored.threshold,
        )
        if scored.is_anomaly.any():
            names = served.detector.feature_names
            top = scored.top(1)[..., 0][scored.is_anomaly]
            for index, count in zip(*np.unique(top, return_counts=True), strict=True):
                m.variable_anomalies.labels(variable=names[index]).inc(int(count))

    def score_long_windows(self, windows: np.ndarray) -> list[BatchResult]:
        served = self.holder.require()
        results = []
        for window in windows:
            scored, seconds = self.run_model(served, "score", window)
            self.observe(scored, len(window) - served.detector.window + 1, seconds, served)
            results.append(BatchResult(served, scored))
        return results

    def frame_of(
        self, data: SeriesData, detector: Detector, field: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The series' (n, D) values in the model's order and its timestamps; the cheap
        checks (how many variables, which) come before any work that grows with them."""
        self.check_variables(list(data.variables), detector, field)
        frame = pd.DataFrame(dict(data.variables))  # float64, NaN where missing
        if data.timestamps is not None:
            stamps = pd.DatetimeIndex(pd.to_datetime(data.timestamps, utc=True)).tz_convert(None)
            frame.insert(0, "__timestamp__", stamps)
        try:
            table = prepare_frame(
                frame,
                feature_names=detector.feature_names,
                timestamp_column="__timestamp__" if data.timestamps else None,
            )
        except DataError as exc:
            message = f"{field}: {exc.message}".replace("__timestamp__", "timestamps")
            raise type(exc)(message, field=f"{field}.{exc.field or 'variables'}") from exc
        return table.values, table.timestamps

    def score_series(self, request: ScoreRequest) -> tuple[ServedModel, Scored, np.ndarray | None]:
        served = self.holder.require()
        detector = served.detector
        series = request.series
        assert series is not None
        total = series.length + (request.context.length if request.context else 0)
        if total > self.settings.max_series_points:
            raise LimitError(
                f"{total} points with context; the limit is {self.settings.max_series_points}",
                field="series",
            )
        values, stamps = self.frame_of(series, detector, "series")
        context = None
        if request.context is not None:
            context, context_stamps = self.frame_of(request.context, detector, "context")
            if (
                stamps is not None
                and context_stamps is not None
                and context_stamps[-1] >= stamps[0]
            ):
                raise DataError("context must end before the series starts", field="context")
        scored, seconds = self.run_model(
            served, "score", values, stride=request.stride, causal=request.causal, context=context
        )
        n = len(values) + (0 if context is None else len(context))
        self.observe(scored, max(n - detector.window + 1, 1), seconds, served)
        return served, scored, stamps

    # ------------------------------------------------------------ response bodies
    def series_body(self, request: ScoreRequest) -> dict:
        served, scored, stamps = self.score_series(request)
        top_k = self.top_k(request, served)
        body = steps_payload(scored, served.detector, request.explain, top_k, stamps)
        return envelope(served, series=body)

    def windows_body(self, request: ScoreRequest, windows: np.ndarray) -> dict:
        """Windows (N, T, D) in one model call, or one series call each if longer than T."""
        if windows.shape[1] == self.holder.require().detector.window:
            served, scored = self.score_batch(windows)
            return self.batch_body(request, served, scored)
        results = self.score_long_windows(windows)
        served = results[0].served  # one model scored the whole request
        detector, top_k = served.detector, self.top_k(request, served)
        bodies = [steps_payload(r.scored, detector, request.explain, top_k, None) for r in results]
        return envelope(served, windows=bodies)

    def batch_body(self, request: ScoreRequest, served: ServedModel, scored: Scored) -> dict:
        top_k = self.top_k(request, served)
        body = windows_payload(scored, served.detector, request.explain, top_k)
        return envelope(served, windows=body)

    @staticmethod
    def top_k(request: ScoreRequest, served: ServedModel) -> int:
        return request.top_k or served.detector.config.top_k
