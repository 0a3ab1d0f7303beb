"""Micro-batching: concurrent single-window requests share one model call.

A request puts its window on a queue and awaits a future. One worker task
takes the first waiting window, collects more for at most ``wait_s`` (or until
``max_windows``), and scores the batch in a worker thread, so the event loop
never blocks on the model. Every window of a batch is scored by the same model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.scoring.pipeline import BatchResult


class MicroBatcher:
    def __init__(
        self,
        score_batch: Callable[[np.ndarray], list[BatchResult]],
        max_windows: int,
        wait_s: float,
    ) -> None:
        self.score_batch = score_batch  # (N, T, D) -> one result per window
        self.max_windows = max_windows
        self.wait_s = wait_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)

    async def submit(self, window: np.ndarray) -> BatchResult:
        """Score one (T, D) window; resolves when its batch is done."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((window, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
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

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            windows = np.stack([window for window, _ in batch])
            try:
                results = await run_in_threadpool(self.score_batch, windows)
            except Exception as exc:  # handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
