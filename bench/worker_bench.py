"""Training jobs per hour of `lvad worker` (docs/deployment.md, "Scaling").

Starts PostgreSQL and Redis on loopback (tests/scale/servers.py) and W workers
(concurrency 1, one torch thread each), queues J jobs training the demo model on the
built-in demo data (3,024 rows x 6 variables; default model parameters unless
``--params``) through the replica's job runner, and reports each job's training time
(started to finished, from its row), the wall time for all, and jobs/hour per worker.

    OMP_NUM_THREADS=1 .venv/bin/python bench/worker_bench.py --jobs 4 --workers 1
    .venv/bin/python bench/worker_bench.py --jobs 4 --workers 2 --params '{"epochs": 10}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.registry.celery_runner import CeleryRunner  # noqa: E402
from app.registry.registry import Registry  # noqa: E402
from app.settings import Settings  # noqa: E402
from model.evaluation.demo import make_demo  # noqa: E402
from tests.scale.cluster import LiveWorker, scale_env  # noqa: E402
from tests.scale.servers import PostgresServer, RedisServer  # noqa: E402


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run(args: argparse.Namespace, folder: Path) -> dict:
    with ExitStack() as stack:
        postgres = stack.enter_context(PostgresServer.running())
        redis = stack.enter_context(RedisServer.running())
        env = scale_env(postgres, redis, LVAD_PROMOTION="manual")  # info: its "ready." line
        settings = Settings(store=folder / "replica", registry_url=postgres.url,
                            broker_url=redis.url, max_queued_jobs=args.jobs)  # fmt: skip
        registry = Registry.open(settings)
        stack.callback(registry.close)
        workers = []
        for n in range(args.workers):
            worker = LiveWorker.launch(folder / f"worker-{n}", folder / f"worker-{n}.log", env)
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        data = folder / "demo-train.csv"
        make_demo().train.to_csv(data, index=False)
        runner = CeleryRunner(registry, settings)
        began = time.monotonic()
        ids = [
            runner.submit(model="default", source="bench", data_path=data, params=args.params).id
            for _ in range(args.jobs)
        ]
        while not all(registry.get_job(job_id).is_finished for job_id in ids):
            time.sleep(1)
        wall = time.monotonic() - began
        jobs = [registry.get_job(job_id) for job_id in ids]
    failed = [job.error for job in jobs if job.state != "succeeded"]
    if failed:
        raise SystemExit(f"jobs failed: {failed}")
    training = [seconds_between(job.started, job.finished) for job in jobs]
    return {
        "workers": args.workers, "jobs": args.jobs, "params": args.params,
        "epochs_run": [len(job.history) for job in jobs],
        "training_s": [round(s, 1) for s in training],
        "median_training_s": round(statistics.median(training), 1),
        "wall_s": round(wall, 1),
        "jobs_per_hour_per_worker": round(3600 * args.jobs / wall / args.workers, 1),
        "jobs_per_hour_per_worker_busy": round(3600 / statistics.median(training), 1),
        "cores": os.cpu_count(), "load_average_after": os.getloadavg(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", type=json.loads, default={}, help="model parameters (JSON)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lvad-worker-bench-") as folder:
        result = run(args, Path(folder))
    print(json.dumps({"load_average_before": load_before, **result}, indent=2))


if __name__ == "__main__":
    main()
