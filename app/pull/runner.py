"""The detectors at work: APScheduler runs, per detector, a scoring job every
``infer_every`` and a training job when one is due; results go to ``PullMetrics``.

Scoring jobs run in a thread pool (one thread per detector, at most
``SCORING_THREADS``); a detector's rounds never overlap (``max_instances=1``), a round
that would start while the previous one still runs is skipped, and late runs are
coalesced. Training jobs run in one thread of their own, so this process reads one
``fit_window`` at a time; the host's job queue bounds how many trainings run, and a
full queue means trying again later. A training job schedules its own next run:
``fit_every`` after a success (never if null), ``fit_retry`` while its job is queued
or running, and ``fit_retry`` doubled at each failure in a row (at most ``fit_every``,
or an hour) when the history is too short, the queue is full or the job failed.

Replicas sharing a registry each run this scheduler, but only the one that ``leads``
(holds an advisory lock, ``app/registry/coordination.py``) queries, scores, exports
and trains; the others' rounds stand by, and one of them takes over within a round
of the leader's loss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from app.pull.detectors_file import DetectorsFile, DetectorSpec
from app.pull.exporter import PullMetrics, Snapshot
from app.pull.host import ModelHost
from app.pull.reader import PrometheusError, PrometheusReader
from app.pull.scoring_round import RoundResult, ScoringState, score_round
from app.pull.training_round import TrainingResult, TrainingState, training_round

log = logging.getLogger(__name__)

SCORING_THREADS = 8
EXPIRY_ROUNDS = 3  # a snapshot is exported for this many infer_every after its round
LONGEST_RETRY = 3600.0  # seconds, the backoff's cap when fit_every is null


def retry_delay(spec: DetectorSpec, failures: int) -> float:
    cap = spec.fit_every or LONGEST_RETRY
    return min(cap, spec.fit_retry * 2 ** max(failures - 1, 0))


class DetectorRunner:
    """Runs every detector of a file against ``host``; ``start`` / ``stop`` the scheduler,
    or ``score_once`` for one round of each without it."""

    def __init__(
        self,
        detectors: DetectorsFile,
        host: ModelHost,
        metrics: PullMetrics,
        reader: PrometheusReader | None = None,
        clock: Callable[[], float] = time.time,
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        """``leads``: asked before each round; False (another replica of a shared registry
        runs the detectors) makes the round a ``standby`` that does nothing."""
        self.leads = leads
        self.specs = {spec.model: spec for spec in detectors.detectors}
        self.host = host
        self.metrics = metrics
        self.reader = reader or PrometheusReader(detectors.prometheus)
        self.clock = clock
        self.scoring = {model: ScoringState() for model in self.specs}
        self.training = {model: TrainingState() for model in self.specs}
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        for model in self.specs:
            metrics.add_detector(model)

    # ------------------------------------------------------------------ scheduling
    def start(self) -> None:
        threads = min(SCORING_THREADS, len(self.specs))
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(threads), "training": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        for model, spec in self.specs.items():
            self._scheduler.add_job(
                self.score_detector,
                "interval",
                args=[model],
                id=f"score:{model}",
                seconds=spec.infer_interval,
                next_run_time=datetime.now(UTC),
                misfire_grace_time=max(1, int(spec.infer_interval)),
            )
            has_model = self.host.variables(model) is not None
            first = None if has_model else 0.0
            if has_model and spec.fit_every is not None:
                first = spec.fit_every
            if first is not None:
                self.schedule_training(model, first)
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.reader.close()

    def schedule_training(self, model: str, delay: float) -> None:
        """Run ``model``'s training job once, ``delay`` seconds from now (replacing a run
        scheduled before)."""
        if self._scheduler is None:
            return
        self._scheduler.add_job(
            self.train_detector,
            "date",
            args=[model],
            id=f"train:{model}",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            executor="training",
            replace_existing=True,
            misfire_grace_time=None,
        )

    # ------------------------------------------------------------------ scoring
    def score_detector(self, model: str) -> RoundResult:
        """One scoring round of ``model``, its results published."""
        if not self.leads():  # the leading replica scores, and exports
            return RoundResult("standby")
        spec = self.specs[model]
        started = time.perf_counter()
        try:
            result = score_round(spec, self.host, self.reader, self.scoring[model], self.clock())
        except PrometheusError as exc:
            log.warning("detector %s: query failed (%s): %s", model, exc.reason, exc.message)
            result = RoundResult("failed")
            result.errors[exc.reason] += 1
        except Exception:  # a round must never stop the detector's next ones
            log.exception("detector %s: scoring round failed", model)
            result = RoundResult("failed")
            result.errors["score_failed"] += 1
        self.publish(spec, result)
        if result.status != "not_due":
            self.metrics.round_seconds.labels(model).observe(time.perf_counter() - started)
        if result.errors.get("model_mismatch"):
            self.request_training(model)
        return result

    def publish(self, spec: DetectorSpec, result: RoundResult) -> None:
        model, metrics = spec.model, self.metrics
        for reason, count in result.errors.items():
            metrics.errors.labels(model, reason).inc(count)
        for reason, count in result.skipped.items():
            metrics.skipped.labels(model, reason).inc(count)
        if result.status == "not_due":
            return  # the previous round's snapshot is still the latest
        metrics.points.labels(model).inc(result.points)
        versions = {g.result.model_version for g in result.groups}
        snapshot = Snapshot(
            result.variables,
            [group.exported() for group in result.groups],
            self.clock() + EXPIRY_ROUNDS * spec.infer_interval,
            versions.pop() if len(versions) == 1 else None,
        )
        latest = max((float(g.times[-1]) for g in result.groups), default=None)
        metrics.scores.publish(model, snapshot, latest)
        if result.status == "scored" and result.errors.total() == 0:
            metrics.scores.mark_success(model, self.clock())

    def request_training(self, model: str) -> None:
        """Train as soon as possible (the model no longer fits the file), once."""
        state = self.training[model]
        with self._lock:
            if state.job_id is None and state.failures == 0:
                state.failures = 1  # later requests wait for this attempt's backoff
                self.schedule_training(model, 0.0)

    # ------------------------------------------------------------------ training
    def train_detector(self, model: str) -> TrainingResult:
        """One training attempt of ``model``; schedules the next one."""
        spec, state = self.specs[model], self.training[model]
        if not self.leads():  # the leading replica trains; ask again when it would
            has_model = self.host.variables(model) is not None
            delay = spec.fit_every if has_model else spec.fit_retry
            if delay is not None:
                self.schedule_training(model, delay)
            return TrainingResult("standby")
        try:
            result = training_round(spec, self.host, self.reader, state, self.clock())
        except PrometheusError as exc:
            self.metrics.errors.labels(model, exc.reason).inc()
            result = TrainingResult("failed", message=f"query failed ({exc.reason})")
        except Exception:  # the next attempt must still be scheduled
            log.exception("detector %s: training round failed", model)
            result = TrainingResult("failed", message="see the log")
        log.info("detector %s: training %s %s", model, result.outcome, result.message)
        if result.outcome in ("submitted", "succeeded", "failed", "queue_full", "too_little_data"):
            self.metrics.trainings.labels(model, result.outcome).inc()
        if result.outcome == "failed":
            self.metrics.errors.labels(model, "train_failed").inc()
        self.schedule_after(spec, state, result)
        return result

    def schedule_after(self, spec: DetectorSpec, state: TrainingState, result: TrainingResult):
        if result.retry:
            state.failures += 1
            self.schedule_training(spec.model, retry_delay(spec, state.failures))
        elif result.outcome in ("submitted", "waiting"):
            self.schedule_training(spec.model, spec.fit_retry)
        else:  # succeeded
            state.failures = 0
            if spec.fit_every is not None:
                self.schedule_training(spec.model, spec.fit_every)

    # ------------------------------------------------------------------ once
    def score_once(self) -> dict[str, RoundResult]:
        """One scoring round of every detector, now, without the scheduler."""
        return {model: self.score_detector(model) for model in self.specs}
