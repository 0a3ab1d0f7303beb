"""Real components on loopback for the pull-mode tests: Prometheus (Debian's package)
with history written by promtool before it starts, the controlled exporter
(tests/pull/value_exporter.py) and Debian's node exporter.

A missing binary skips the tests that need it, except under CI=true, where it fails
them (.ci/run installs all three).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.app.live import HOST, free_port, wait_until
from tests.conftest import missing_component
from tests.pull.signals import openmetrics_history

START_TIMEOUT = 30.0  # seconds


def require_binary(name: str, package: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        message = f"{name} is not installed (apt-get install {package}; .ci/run does)"
        missing_component(message)
    return binary


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Service:
    """A process listening on ``port``, its output in ``log``."""

    command: list[str]
    port: int
    log: Path
    ready_path: str = "/metrics"
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

        def ready() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            return answers(self.url + self.ready_path)

        wait_until(ready, START_TIMEOUT, f"{self.command[0]} ready", interval=0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)


def value_exporter(root: Path) -> tuple[Service, Path]:
    control = root / "control.json"
    port = free_port()
    command = [sys.executable, "-m", "tests.pull.value_exporter", str(port), str(control)]
    return Service(command, port, root / "exporter.log"), control


def node_exporter(binary: str, root: Path) -> Service:
    port = free_port()
    command = [
        binary,
        f"--web.listen-address={HOST}:{port}",
        "--collector.disable-defaults",
        "--collector.loadavg",
        "--collector.meminfo",
        "--collector.cpu",
    ]
    return Service(command, port, root / "node-exporter.log")


@dataclass
class PrometheusSetup:
    binary: str
    root: Path
    targets: dict[str, str]  # job -> host:port
    history_end: float  # Unix seconds: the last point written by promtool
    port: int = field(default_factory=free_port)

    def service(self) -> Service:
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "honor_labels": True, "static_configs": [{"targets": [t]}]}
                for job, t in self.targets.items()
            ],
        }
        (self.root / "prometheus.yml").write_text(json.dumps(config))
        command = [
            self.binary,
            f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload
        ]
        return Service(command, self.port, self.root / "prometheus.log", "/-/ready")

    def add_target(self, job: str, target: str) -> None:
        """Scrape ``target`` too, from now on (the running Prometheus reloads)."""
        self.targets[job] = target
        self.service()  # rewrites the configuration
        response = httpx.post(f"http://{HOST}:{self.port}/-/reload", timeout=10.0)
        assert response.status_code == 200, response.text


def write_history(
    promtool: str, data_dir: Path, start: int, end: int, target: dict[str, str]
) -> None:
    """Blocks of every test series from ``start`` to ``end`` (Unix seconds) in
    ``data_dir``, written by ``promtool tsdb create-blocks-from openmetrics``; ``target``:
    the job and instance labels the live series get."""
    source = data_dir.parent / "history.om"
    source.write_text(openmetrics_history(start, end, target))
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
