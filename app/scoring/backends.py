"""Where a model call runs: one interface, implementations chosen once at start-up.

``ScoringBackend`` scores windows or a series with a given ``ServedModel`` and
returns the ``Scored`` arrays with the seconds the model took. The service builds
its backend once (``build_backend``) by wrapping, never by branching per call:

* ``InProcess``: the server's own process, one call at a time (torch already uses
  every core for one call; concurrent calls only oversubscribe the threads), on a
  thread of its own: never waiting for the request thread pool, which parsing and
  file checks share;
* ``InChild``: the scoring process (``app/scoring/process.py``), beside the event
  loop, so parsing and answering requests never slows the model;
* ``BySize``: small calls in one backend, large ones in another (the round trip to
  the child costs more than it saves for a call of a few windows);
* ``MicroBatching`` (``app/scoring/batching.py``): concurrent single-window calls
  of one model share one call of the backend it wraps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.scoring.models import ServedModel
from app.scoring.process import ScoringProcess
from model.alarm import Scored

# Calls on fewer model windows than this stay in the server's process even when there
# is a scoring process: their model time is a few ms, less than the round trip.
LOCAL_ROWS = 32
CHILD_WAITERS = 4  # threads waiting on the scoring child (it takes two calls at a time)


@dataclass(frozen=True)
class SeriesOptions:
    """How a series is scored (``Detector.score``'s options)."""

    stride: int | None = None
    causal: bool = False
    context: np.ndarray | None = None  # (m, D) points before the series, original units


@dataclass(frozen=True)
class Timed:
    scored: Scored
    seconds: float  # the model call alone, not the wait for other calls


class ScoringBackend(Protocol):
    async def score_windows(self, served: ServedModel, windows: np.ndarray) -> Timed:
        """Score (N, T', D) windows, T' >= the model's window, each on its own."""
        ...

    async def score_series(
        self, served: ServedModel, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        """Score a series (n, D)."""
        ...


def model_windows(served: ServedModel, rows: int, length: int) -> int:
    """How many model windows scoring ``rows`` inputs of ``length`` steps takes."""
    return rows * max(1, length - served.detector.window + 1)


def series_windows(served: ServedModel, values: np.ndarray, options: SeriesOptions) -> int:
    points = len(values) + (0 if options.context is None else len(options.context))
    return model_windows(served, 1, points)


# called after every model call: (model, model windows scored, seconds)
OnCall = Callable[[ServedModel, int, float], None]


class InProcess:
    def __init__(self, on_call: OnCall) -> None:
        self.on_call = on_call
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lvad-model")

    async def score_windows(self, served: ServedModel, windows: np.ndarray) -> Timed:
        rows = model_windows(served, len(windows), windows.shape[1])
        return await self._in_thread(
            self._run, served, rows, lambda: served.detector.score_windows(windows)
        )

    async def score_series(
        self, served: ServedModel, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        def call() -> Scored:
            return served.detector.score(
                values, stride=options.stride, causal=options.causal, context=options.context
            )

        rows = series_windows(served, values, options)
        return await self._in_thread(self._run, served, rows, call)

    async def _in_thread(self, function: Callable[..., Timed], *args: object) -> Timed:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _run(self, served: ServedModel, rows: int, call: Callable[[], Scored]) -> Timed:
        started = time.perf_counter()
        scored = call()
        seconds = time.perf_counter() - started
        self.on_call(served, rows, seconds)
        return Timed(scored, seconds)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


class InChild:
    def __init__(self, process: ScoringProcess, on_call: OnCall) -> None:
        self.process = process
        self.on_call = on_call
        # threads that wait for the child: calls queue here, not in the request pool
        self._threads = ThreadPoolExecutor(CHILD_WAITERS, thread_name_prefix="lvad-child")

    async def _in_thread(self, call: Callable[[], tuple[Scored, float]]) -> tuple[Scored, float]:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def close(self) -> None:
        self._threads.shutdown(wait=True)

    async def score_windows(self, served: ServedModel, windows: np.ndarray) -> Timed:
        scored, seconds = await self._in_thread(
            lambda: self.process.score_windows(served.path, windows)
        )
        self.on_call(served, model_windows(served, len(windows), windows.shape[1]), seconds)
        return Timed(scored, seconds)

    async def score_series(
        self, served: ServedModel, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        scored, seconds = await self._in_thread(
            lambda: self.process.score_series(
                served.path,
                values,
                stride=options.stride,
                causal=options.causal,
                context=options.context,
            )
        )
        self.on_call(served, series_windows(served, values, options), seconds)
        return Timed(scored, seconds)


class BySize:
    """Calls of fewer than ``rows`` model windows go to ``small``, the others to ``large``."""

    def __init__(self, small: ScoringBackend, large: ScoringBackend, rows: int) -> None:
        self.small, self.large, self.rows = small, large, rows

    async def score_windows(self, served: ServedModel, windows: np.ndarray) -> Timed:
        rows = model_windows(served, len(windows), windows.shape[1])
        backend = self.small if rows < self.rows else self.large
        return await backend.score_windows(served, windows)

    async def score_series(
        self, served: ServedModel, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        backend = self.small if series_windows(served, values, options) < self.rows else self.large
        return await backend.score_series(served, values, options)
