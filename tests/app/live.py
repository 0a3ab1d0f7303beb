"""A real ``lvad serve`` in a subprocess, for tests that need the whole process.

The server runs in its own session (process group), so stopping it can also end
the training processes it spawned. Its output goes to a log file, whose tail
every failure message carries.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import FEATURES, make_synthetic

LVAD = Path(sys.executable).with_name("lvad")  # the venv's console script
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 120.0  # seconds: importing torch on a loaded machine takes a while
EXIT_TIMEOUT = 60.0
QUIET_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LVAD_TORCH_THREADS": "1"}
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TINY_PARAMS = {"window": 16, "hidden_size": 16, "latent_dim": 4, "epochs": 3}
LONG_PARAMS = {**TINY_PARAMS, "epochs": 200, "patience": 200}  # runs until it is killed
JOB_TIMEOUT = 120.0


def free_port() -> int:
    """A port nobody listens on right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass(eq=False)
class LiveServer:
    """One ``lvad serve`` process listening on ``base_url``."""

    process: subprocess.Popen
    base_url: str
    log_path: Path

    @classmethod
    def launch(
        cls, store: Path, log_path: Path, env: Mapping[str, str] | None = None
    ) -> LiveServer:
        """Start ``lvad serve`` on a free port with ``LVAD_STORE=store``; returns at once.

        The environment is this one without any ``LVAD_*`` variable, plus ``env``;
        the working directory is the log's folder, so no stray ``.env`` is read.
        """
        port = free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LVAD_")}
        environment.update(QUIET_THREADS, PYTHONUNBUFFERED="1", LVAD_STORE=str(store))
        environment.update(env or {})
        command = [str(LVAD), "serve", "--host", HOST, "--port", str(port)]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=log_path.parent,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches its children
            )
        return cls(process, f"http://{HOST}:{port}", log_path)

    @classmethod
    @contextlib.contextmanager
    def serving(
        cls, store: Path, log_path: Path, env: Mapping[str, str] | None = None
    ) -> Iterator[LiveServer]:
        """A launched server once it is ready; stopped when the block ends."""
        live = cls.launch(store, log_path, env)
        try:
            live.wait_ready()
            yield live
        finally:
            live.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, timeout: float = 60.0, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def status_of(self, path: str) -> int | None:
        """The status of GET ``path``; None if the server does not answer (yet)."""
        if self.process.poll() is not None:
            raise AssertionError(
                f"the server exited with code {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            return httpx.get(self.base_url + path, timeout=5.0).status_code
        except httpx.TransportError:
            return None

    def wait_for_status(self, path: str, status: int, timeout: float = STARTUP_TIMEOUT) -> None:
        try:
            wait_until(lambda: self.status_of(path) == status, timeout, f"GET {path} -> {status}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    def wait_live(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_for_status("/healthz", 200, timeout)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_live(timeout)
        self.wait_for_status("/readyz", 200, timeout)

    # ------------------------------------------------------------------ stopping
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server process only (uvicorn handles SIGTERM itself)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL the server and everything in its process group (training children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):  # all gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(EXIT_TIMEOUT)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """The exit code once the process ends within ``timeout`` s, else None."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL to the group if it has not exited within ``timeout`` s.

        Always ends with the group killed, so nothing it spawned outlives it.
        Returns the exit code of a graceful stop, None if it had to be killed.
        """
        self.signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        self.kill_group()
        return code


# ---------------------------------------------------------------------- requests
def synthetic_windows(count: int, length: int = 16) -> np.ndarray:
    """``count`` windows of the synthetic test data (with its anomalies), (count, length, 4)."""
    series = make_synthetic().test  # (600, 4)
    windows = np.lib.stride_tricks.sliding_window_view(series, length, axis=0)  # (n, 4, length)
    windows = windows.transpose(0, 2, 1)
    return np.resize(windows, (count, length, len(FEATURES)))


def submit_job(
    client: httpx.Client,
    params: dict,
    *,
    upload: Path | None = None,
    path: str | None = None,
    model: str = "default",
) -> dict:
    """POST /v1/jobs (multipart): ``upload`` a local file, or name ``path`` in the data dir,
    training a version of ``model``."""
    form: dict = {"params": (None, json.dumps(params)), "model": (None, model)}
    if upload is not None:
        form["file"] = (upload.name, upload.read_bytes(), "text/csv")
    if path is not None:
        form["path"] = (None, path)
    response = client.post("/v1/jobs", headers=AUTH, files=form)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()


def wait_for_job(
    client: httpx.Client, job_id: str, condition: Callable[[dict], bool], what: str
) -> dict:
    """Poll GET /v1/jobs/{id} until ``condition(job)``; the job as it was then."""
    latest: dict = {}

    def check() -> bool:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        latest.clear()
        latest.update(response.json())
        if latest["state"] in ("failed", "cancelled"):
            raise AssertionError(f"job {job_id} {latest['state']}: {latest['error']}")
        return condition(latest)

    wait_until(check, JOB_TIMEOUT, f"job {job_id}: {what}", interval=0.2)
    return latest


def score(
    client: httpx.Client, windows: np.ndarray, variables: list[str], model: str | None = None
) -> httpx.Response:
    """POST the windows to /v1/score, or to ``model``'s own score route."""
    body = {"windows": windows.tolist(), "variables": variables, "explain": "none"}
    return client.post("/v1/score" if model is None else f"/v1/models/{model}/score", json=body)
