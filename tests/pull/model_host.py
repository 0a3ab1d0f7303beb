"""``ModelHost`` on real detectors trained in this process: the service's part of pull
mode, as the tests (and bench/pull_bench.py) need it.

Training runs in a worker thread, one job at a time; at most ``max_jobs`` jobs may be
queued or running, and ``train`` raises ``TooManyJobs`` beyond. Each successful
job's detector becomes the name's active version (versions count from 1). Scoring
is causal with the rows before ``context`` as context, as the Protocol says, each
stream's flags decided by its own state (``Detector.score_stream``), as the service
does (``app/scoring/streams.py``) without saving it.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from app.errors import TooManyJobs
from app.pull.host import Band, StreamResult
from app.registry.records import JobState
from model.band import expected_band
from model.config import ModelConfig
from model.data import prepare_array
from model.detector import Detector
from model.engine import make_engine
from model.errors import LvadError
from model.stream import StreamState


class InProcessHost:
    def __init__(self, max_jobs: int = 1, engine: str = "onnxruntime") -> None:
        self.max_jobs = max_jobs
        self.engine = engine
        self.models: dict[str, tuple[Detector, str]] = {}
        self.streams: dict[tuple[str, str], tuple[str, StreamState]] = {}  # -> version, state
        self.jobs: dict[str, Future] = {}
        self.calls: list[tuple[str, str, int, int]] = []  # (model, stream, rows, context)
        self.flagged: dict[str, list[np.datetime64]] = {}  # stream -> anomalous points' times
        self.trained: list[tuple[str, int, list[str], dict]] = []  # (model, rows, names, params)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="training")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def add(self, model: str, detector: Detector) -> None:
        """Make ``detector`` the active version of ``model`` (as a finished job does)."""
        with self._lock:
            version = int(self.models[model][1]) + 1 if model in self.models else 1
            self.models[model] = (detector, str(version))

    def active(self, model: str) -> Detector:
        try:
            return self.models[model][0]
        except KeyError:
            raise LvadError(f"no model named {model!r}") from None

    # ------------------------------------------------------------------ ModelHost
    def variables(self, model: str) -> list[str] | None:
        found = self.models.get(model)
        return list(found[0].feature_names) if found else None

    def context_points(self, model: str) -> int:
        return self.active(model).context_points(causal=True)

    def score(
        self,
        model: str,
        stream: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        context: int = 0,
    ) -> StreamResult:
        self.active(model)  # LvadError for an unknown name
        detector, version = self.models[model]
        if len(timestamps) != len(values) or not np.isfinite(values).all():
            raise LvadError("values must be finite, one row per timestamp")
        self.calls.append((model, stream, len(values), context))
        saved_version, state = self.streams.get((model, stream), (None, None))
        if state is None or saved_version != version:
            state = detector.stream_state(causal=True)
        scored, state = detector.score_stream(values[context:], state, values[:context])
        self.streams[(model, stream)] = (version, state)
        lower, mean, upper = expected_band(detector, values)
        self.flagged.setdefault(stream, []).extend(timestamps[context:][scored.is_anomaly])
        band = Band(lower, mean, upper)
        return StreamResult(scored.alarm_score, scored.limit, scored.is_anomaly, band, version)

    def train(
        self,
        model: str,
        values: np.ndarray,
        timestamps: np.ndarray,
        variables: list[str],
        params: dict,
    ) -> str:
        config = ModelConfig().replace(**params)
        with self._lock:
            if sum(not job.done() for job in self.jobs.values()) >= self.max_jobs:
                raise TooManyJobs(f"{self.max_jobs} training job(s) already queued or running")
            job_id = uuid.uuid4().hex
            self.trained.append((model, len(values), list(variables), dict(params)))
            self.jobs[job_id] = self._executor.submit(self.fit, model, values, variables, config)
        return job_id

    def fit(self, model: str, values: np.ndarray, variables: list[str], config: ModelConfig):
        detector = Detector.fit(prepare_array(values, variables), config)
        if self.engine != "onnxruntime":
            detector.engine = make_engine(detector.net, detector.noise, self.engine)
        self.add(model, detector)

    def job_state(self, job_id: str) -> JobState:
        job = self.jobs[job_id]
        if job.cancelled():
            return JobState.CANCELLED
        if not job.done():
            return JobState.RUNNING if job.running() else JobState.QUEUED
        return JobState.FAILED if job.exception() is not None else JobState.SUCCEEDED
