"""Scoring the next chunk of a named stream: its alarm state carried across requests.

A series sent with a ``stream`` name (and each group of a pull-mode detector) is the
next chunk of that stream. Its flags are decided by the stream's adaptive threshold
(``model/stream.py``: SPOT on the alarm scores, refitted on a new level after a
regime change, and a drift statistic), which starts from the served version's
validation scores and is saved in the registry after every chunk
(``app/registry/streams.py``), so it carries across requests and restarts. A new
active version starts its streams afresh. One chunk of a stream is scored at a time
in this process; two replicas advancing one stream at once get a 409 for one chunk.
"""

from __future__ import annotations

import time
import weakref
from asyncio import Lock
from dataclasses import dataclass, replace

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.ops.metrics import ServiceMetrics
from app.registry.streams import MemoryStreamStates, SavedStream, StreamStates
from app.scoring.backends import ScoringBackend, SeriesOptions, Timed
from app.scoring.models import ServedModel
from model.errors import DataError
from model.stream import StreamState

LIVE_SECONDS = 3600.0  # a stream counts in the drift gauges this long after its last chunk


@dataclass(frozen=True)
class Seen:
    drift: float
    drifting: bool
    at: float  # time.monotonic() of its last chunk


class StreamScoring:
    def __init__(
        self,
        backend: ScoringBackend,
        states: StreamStates | MemoryStreamStates,
        metrics: ServiceMetrics,
    ) -> None:
        self.backend = backend
        self.states = states
        self.metrics = metrics
        self._locks: weakref.WeakValueDictionary[tuple[str, str], Lock] = (
            weakref.WeakValueDictionary()
        )
        self._seen: dict[str, dict[str, Seen]] = {}  # model -> stream -> last drift

    async def score(
        self, served: ServedModel, stream: str, values: np.ndarray, options: SeriesOptions
    ) -> Timed:
        """Score ``values`` as the next chunk of ``stream`` of ``served``'s model (causal as
        ``options.causal`` says, ``options.context`` the points before it) and save the
        stream's state; the result carries that state."""
        key = (served.name, stream)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = Lock()
        async with lock:
            saved = await run_in_threadpool(self.states.get, served.name, stream)
            state = self.state_for(served, stream, saved, options.causal)
            timed = await self.backend.score_series(served, values, replace(options, stream=state))
            after = timed.stream
            assert after is not None  # a stream given, a stream returned
            await run_in_threadpool(
                self.states.save, served.name, stream, served.version, after, saved
            )
        self.observe(served.name, stream, state, after)
        return timed

    @staticmethod
    def state_for(
        served: ServedModel, stream: str, saved: SavedStream | None, causal: bool
    ) -> StreamState:
        """The state the next chunk starts from: the saved one if the served version
        advanced it, else the served version's first state."""
        if saved is None or saved.state is None or saved.version != served.version:
            return served.detector.stream_state(causal)
        if saved.state.causal != causal:
            how = "causally" if saved.state.causal else "as a series"
            raise DataError(
                f"stream {stream!r} is scored {how}: send `causal` as before, or use "
                "another stream name",
                field="causal",
            )
        return saved.state

    def observe(self, model: str, stream: str, before: StreamState, after: StreamState) -> None:
        """The drift gauges over the model's streams seen in the last hour, and the regime
        changes of this chunk."""
        changes = after.rebaselines - before.rebaselines
        if changes > 0:
            self.metrics.regime_changes.labels(model=model).inc(changes)
        now = time.monotonic()
        seen = self._seen.setdefault(model, {})
        seen[stream] = Seen(after.drift, after.drifting, now)
        for old in [s for s, v in seen.items() if now - v.at > LIVE_SECONDS]:
            del seen[old]
        drifts = [v.drift for v in seen.values() if v.drift == v.drift]
        self.metrics.drift.labels(model=model).set(max(drifts) if drifts else 0.0)
        drifting = sum(v.drifting for v in seen.values())
        self.metrics.streams.labels(model=model, drifting="true").set(drifting)
        self.metrics.streams.labels(model=model, drifting="false").set(len(seen) - drifting)
