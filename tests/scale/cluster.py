"""A scale-out on loopback: `lvad serve` replicas and `lvad worker` processes sharing one
PostgreSQL registry and one Redis broker (tests/scale/servers.py), each with its own
LVAD_STORE (a cache) and its log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.app.live import API_KEY, EXIT_TIMEOUT, LVAD, QUIET_THREADS, wait_until
from tests.scale.processes import child_pids
from tests.scale.servers import PostgresServer, RedisServer

HEARTBEAT_TIMEOUT_S = 6  # a lost worker's job is swept within about 7 s
WORKER_START_TIMEOUT = 120.0


def scale_env(postgres: PostgresServer, redis: RedisServer, **extra: str) -> dict[str, str]:
    """What every replica and worker of one scale-out is given."""
    return {
        "LVAD_REGISTRY_URL": postgres.url,
        "LVAD_BROKER_URL": redis.url,
        "LVAD_API_KEY": API_KEY,
        "LVAD_BOOTSTRAP_DEMO": "false",
        "LVAD_PROMOTION": "always",
        "LVAD_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
        "LVAD_REFRESH_INTERVAL_S": "0.5",
        "LVAD_REGISTRY_POOL_SIZE": "2",
        **extra,
    }


@dataclass(eq=False)
class LiveWorker:
    """One ``lvad worker`` (Celery: a main process and its pool), in its own session."""

    process: subprocess.Popen
    log_path: Path
    store: Path

    @classmethod
    def launch(cls, store: Path, log_path: Path, env: dict[str, str]) -> LiveWorker:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LVAD_")}
        environment.update(QUIET_THREADS, PYTHONUNBUFFERED="1", LVAD_STORE=str(store), **env)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(LVAD), "worker", "--concurrency", "1"], cwd=log_path.parent,
                env=environment, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return cls(process, log_path, store)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Until Celery says it is consuming (its "ready." line) and the worker's ready
        file, its container's health check, is there."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.log_text()[-3000:]}")
            return " ready." in self.log_text() and (self.store / "worker.ready").is_file()

        wait_until(ready, timeout, "the worker to be ready", interval=0.2)

    def runs(self, pid: int) -> bool:
        """Whether ``pid`` (a job's pool process) is one of this worker's."""
        return pid in child_pids(self.pid)

    def kill(self) -> None:
        """SIGKILL the worker and its pool, as a lost machine would."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(EXIT_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # Celery's cold shutdown: at once
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        self.kill()
