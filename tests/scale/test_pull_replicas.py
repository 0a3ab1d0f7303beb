"""Pull mode on replicas of a shared registry: the replica holding the advisory lock runs
the detectors, the others stand by, and one takes over once the leader lets go."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.pull.detectors_file import parse_detectors
from app.pull.exporter import PullMetrics
from app.pull.runner import DetectorRunner
from app.registry.coordination import SchedulerLock
from app.registry.registry import Registry
from tests.pull.model_host import InProcessHost
from tests.pull.test_training_queue import detectors_file

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: a leader's queries fail at once
DETECTOR = {"model": "m", "host": "a", "retry": "1s", "points": 100}


def replica_runner(registry: Registry) -> tuple[DetectorRunner, SchedulerLock, CollectorRegistry]:
    lock = SchedulerLock(registry, "pull-detectors")
    metrics = CollectorRegistry()
    detectors = parse_detectors(detectors_file(UNREACHABLE, DETECTOR))
    runner = DetectorRunner(detectors, InProcessHost(), PullMetrics(metrics), leads=lock.holds)
    return runner, lock, metrics


def failed_trainings(metrics: CollectorRegistry) -> float:
    labels = {"model": "m", "outcome": "failed"}
    return metrics.get_sample_value("lvad_detector_trainings_total", labels) or 0.0


def test_one_replica_runs_the_detectors_and_another_takes_over(database, tmp_path):
    one, other = Registry(tmp_path / "one", database), Registry(tmp_path / "two", database)
    (a, a_lock, a_metrics), (b, b_lock, b_metrics) = replica_runner(one), replica_runner(other)
    try:
        assert a.train_detector("m").outcome == "failed"  # A leads: it queried, and failed
        assert a.score_detector("m").status != "standby"
        assert b.train_detector("m").outcome == "standby"
        assert b.score_detector("m").status == "standby"
        assert (failed_trainings(a_metrics), failed_trainings(b_metrics)) == (1.0, 0.0)
        a_lock.release()  # A stops (or its connection is lost): B takes over
        assert b.train_detector("m").outcome == "failed"
        assert a.score_detector("m").status == "standby"
        assert (failed_trainings(a_metrics), failed_trainings(b_metrics)) == (1.0, 1.0)
    finally:
        for runner, lock in ((a, a_lock), (b, b_lock)):
            runner.stop()
            lock.release()
        one.close()
        other.close()
