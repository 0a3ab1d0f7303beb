"""The Celery application of training jobs (scale-out): its settings, and publishing.

One task, ``lvad.train(job_id)``, on one queue. Its message carries only the job's
id; the job's row is the truth about it (``app/registry/claims.py``). The settings
and why (docs/deployment.md, "Training jobs on Celery workers"):

* ``task_acks_late``: acknowledged when the job ends, not when it starts;
* ``task_reject_on_worker_lost``: a pool process killed mid-job gives its message
  back instead of acknowledging it;
* ``worker_prefetch_multiplier=1``: a worker reserves only the jobs it can run now;
* ``visibility_timeout`` longer than the longest job (``LVAD_JOB_TIME_LIMIT_HOURS``
  plus 10 minutes): Redis gives an unacknowledged message to another worker after it;
* ``worker_max_tasks_per_child=1``: each job in a fresh process, whose memory goes
  with it;
* no result backend: results are in the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.settings import Settings
from model.errors import LvadError

if TYPE_CHECKING:
    from celery import Celery

TASK = "lvad.train"
QUEUE = "lvad-training"
VISIBILITY_MARGIN_S = 600


class BrokerUnavailable(LvadError):
    """The broker of training jobs cannot be reached."""

    status_code = 503
    code = "broker_unavailable"
    retry_after = 5


def visibility_timeout(settings: Settings) -> int:
    """Seconds Redis waits for an acknowledgement before handing a message out again."""
    return int(settings.job_time_limit_hours * 3600) + VISIBILITY_MARGIN_S


def make_celery(settings: Settings) -> Celery:
    """The Celery app on ``LVAD_BROKER_URL`` (no connection is made here)."""
    from celery import Celery

    if settings.broker_url is None:
        raise LvadError("LVAD_BROKER_URL is not set")
    app = Celery("lvad", broker=settings.broker_url.get_secret_value(), set_as_current=False)
    visibility = visibility_timeout(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility},
        worker_max_tasks_per_child=1,
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=QUEUE,
        task_ignore_result=True,
        # the job stops itself at its time limit; this kills a process that did not
        task_time_limit=visibility - VISIBILITY_MARGIN_S // 2,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_soft_shutdown_timeout=30,
    )
    return app


def publish(app: Celery, job_id: str) -> None:
    """Queue the message of ``job_id``; BrokerUnavailable when Redis does not take it."""
    from kombu.exceptions import OperationalError

    try:
        app.send_task(TASK, args=[job_id], queue=QUEUE)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            "the broker of training jobs cannot be reached; retry in a few seconds"
        ) from exc
