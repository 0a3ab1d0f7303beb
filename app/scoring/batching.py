"""Micro-batching: concurrent single-window calls of one model share one model call.

``MicroBatching`` wraps another backend. A call with one window of exactly the
model's length puts it on a queue and awaits a future; every other call goes
straight to the wrapped backend. One worker task takes the first waiting window,
collects more for at most ``wait_s`` (or until ``max_windows``), and scores them
with one call per model (a batch may hold windows for several named models) on
``batches``, the server's own process: the requests behind a batch are small, so
there is little parsing for the model call to compete with, and handing the batch
to the scoring process would cost more CPU than the call (a round trip of its
arrays, results and pickles, in both processes).

The queue is bounded, as Triton's ``max_queue_size``: with ``max_queued`` windows
waiting, a new call answers 503 at once with ``Retry-After``; a window that waited
longer than ``queue_timeout_s`` for its batch to start answers the same instead of
being scored for a client that may have given up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from app.errors import Overloaded
from app.scoring.backends import ScoringBackend, SeriesOptions, Timed
from app.scoring.models import ServedModel


@dataclass(frozen=True)
class _Waiting:
    served: ServedModel
    window: np.ndarray  # (T, D)
    future: asyncio.Future
    queued: float  # time.monotonic() when it was queued


class MicroBatching:
    def __init__(
        self,
        inner: ScoringBackend,
        batches: ScoringBackend,
        max_windows: int,
        wait_s: float,
        max_queued: int = 1024,
        queue_timeout_s: float = 10.0,
    ) -> None:
        self.inner = inner
        self.batches = batches
        self.max_windows = max_windows
        self.wait_s = wait_s
        self.queue_timeout_s = queue_timeout_s
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=max_queued)
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run(), name="micro-batching")

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)

    async def score_windows(self, served: ServedModel, windows: np.ndarray) -> Timed:
        if windows.shape[:2] != (1, served.detector.window) or self.worker is None:
            return await self.inner.score_windows(served, windows)
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Waiting(served, windows[0], future, time.monotonic()))
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self.queue.maxsize} single-window requests are waiting to be scored "
                "(LVAD_BATCH_QUEUE_WINDOWS): retry shortly"
            ) from None
        return await future

    async def score_series(
        self, served: ServedModel, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        return await self.inner.score_series(served, values, options)

    async def _collect(self) -> list[_Waiting]:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_windows:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.queue.empty():
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), max(remaining, 0)))
            except TimeoutError:
                break
        return batch

    def _expire(self, batch: list[_Waiting]) -> list[_Waiting]:
        """The windows still wanted: those that waited too long answer 503 instead."""
        now, kept = time.monotonic(), []
        for waiting in batch:
            if waiting.future.done():  # the request went away
                continue
            if now - waiting.queued > self.queue_timeout_s:
                waiting.future.set_exception(
                    Overloaded(
                        f"waited {now - waiting.queued:.1f} s for scoring, over the "
                        f"{self.queue_timeout_s:g} s deadline (LVAD_BATCH_QUEUE_TIMEOUT_S)"
                    )
                )
                continue
            kept.append(waiting)
        return kept

    async def _run(self) -> None:
        while True:
            batch = self._expire(await self._collect())
            by_model: dict[int, list[_Waiting]] = {}
            for waiting in batch:  # one ServedModel object per loaded version
                by_model.setdefault(id(waiting.served), []).append(waiting)
            await asyncio.gather(*(self._score(group) for group in by_model.values()))

    async def _score(self, group: list[_Waiting]) -> None:
        windows = np.stack([waiting.window for waiting in group])  # (B, T, D)
        try:
            timed = await self.batches.score_windows(group[0].served, windows)
        except Exception as exc:  # handed to every waiting call
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        for i, waiting in enumerate(group):
            if not waiting.future.done():
                waiting.future.set_result(Timed(timed.scored.pick(slice(i, i + 1)), timed.seconds))
