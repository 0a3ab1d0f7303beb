"""Micro-batching: concurrent single-window requests share one model call.

A request puts its window on a queue and awaits a future. One worker task
takes the first waiting window, collects more for at most ``wait_s`` (or until
``max_windows``), and scores the batch in its own thread (not the request thread
pool, which parsing and other requests share), so the event loop never blocks on
the model. Every window of a batch is scored by the same model.

The queue is bounded, as Triton's ``max_queue_size``: with ``max_queued`` windows
waiting, a new request answers 503 at once with ``Retry-After``; a window that
waited longer than ``queue_timeout_s`` for its batch to start answers the same
instead of being scored for a client that may have given up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.errors import Overloaded
from app.serving import BatchResult

Waiting = tuple[np.ndarray, asyncio.Future, float]  # window (T, D), its answer, when queued


class MicroBatcher:
    def __init__(
        self,
        score_batch: Callable[[np.ndarray], list[BatchResult]],
        max_windows: int,
        wait_s: float,
        max_queued: int = 1024,
        queue_timeout_s: float = 10.0,
    ) -> None:
        self.score_batch = score_batch  # (N, T, D) -> one result per window
        self.max_windows = max_windows
        self.wait_s = wait_s
        self.queue_timeout_s = queue_timeout_s
        self.queue: asyncio.Queue[Waiting] = asyncio.Queue(maxsize=max_queued)
        self.worker: asyncio.Task | None = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="lvad-batch")

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        self.thread.shutdown(wait=True)

    async def submit(self, window: np.ndarray) -> BatchResult:
        """Score one (T, D) window; resolves when its batch is done. Overloaded (503) if
        the queue is full, or the window waited past ``queue_timeout_s``."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((window, future, time.monotonic()))
        except asyncio.QueueFull:
            raise Overloaded(
                f"{self.queue.maxsize} single-window requests are waiting to be scored "
                "(LVAD_BATCH_QUEUE_WINDOWS): retry shortly"
            ) from None
        return await future

    async def _collect(self) -> list[Waiting]:
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

    def _expire(self, batch: list[Waiting]) -> list[Waiting]:
        """The windows still wanted: those that waited too long answer 503 instead."""
        now, kept = time.monotonic(), []
        for item in batch:
            _, future, queued = item
            if future.done():  # the request went away
                continue
            if now - queued > self.queue_timeout_s:
                future.set_exception(
                    Overloaded(
                        f"waited {now - queued:.1f} s for scoring, over the "
                        f"{self.queue_timeout_s:g} s deadline (LVAD_BATCH_QUEUE_TIMEOUT_S)"
                    )
                )
                continue
            kept.append(item)
        return kept

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._expire(await self._collect())
            if not batch:
                continue
            windows = np.stack([window for window, _, _ in batch])
            try:
                results = await loop.run_in_executor(self.thread, self.score_batch, windows)
            except Exception as exc:  # handed to every waiting request
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
