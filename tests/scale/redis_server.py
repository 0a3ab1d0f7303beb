"""A real redis-server on a free 127.0.0.1 port (tests/scale/servers.py)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.app.live import HOST, free_port, wait_until
from tests.scale.processes import START_TIMEOUT, MissingServer, server_directory


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise MissingServer("redis-server not found (Debian package redis-server)")
    return found


@dataclass(eq=False)
class RedisServer:
    """One redis-server, append-only file fsynced on every write (nothing lost to SIGKILL)."""

    root: Path  # the temporary directory: redis.conf, the append-only files, the socket
    port: int
    binary: str = field(default_factory=redis_binary)
    process: subprocess.Popen | None = None

    @staticmethod
    def check_installed() -> None:
        redis_binary()

    @classmethod
    def create(cls) -> RedisServer:
        server = cls(server_directory("lvad-redis-", None), free_port())
        settings = {
            "bind": HOST, "port": server.port, "dir": server.root, "daemonize": "no",
            "unixsocket": server.root / "redis.sock", "unixsocketperm": "700",
            "appendonly": "yes", "appendfsync": "always", "save": '""',
            "logfile": server.root / "redis.log", "protected-mode": "yes",
        }  # fmt: skip
        lines = (f"{name} {value}\n" for name, value in settings.items())
        (server.root / "redis.conf").write_text("".join(lines))
        return server

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RedisServer]:
        server = cls.create()
        try:
            server.start()
            yield server
        finally:
            server.destroy()

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0, as ``LVAD_BROKER_URL`` takes it."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def start(self) -> None:
        """Start on the same port and data; wait until it answers PING (AOF loaded)."""
        if self.pid is not None:
            raise RuntimeError("redis-server is already running")
        self.process = subprocess.Popen(
            [self.binary, str(self.root / "redis.conf")], cwd=self.root,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self.answers_ping, START_TIMEOUT, "redis-server to answer PING")

    def answers_ping(self) -> bool:
        if self.pid is None:
            raise RuntimeError(f"redis-server exited:\n{self.log_tail()}")
        try:
            with redis.Redis.from_url(self.url, socket_timeout=2) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        self.end(signal.SIGTERM)

    def kill(self) -> None:
        self.end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def end(self, sig: int) -> None:
        if self.pid is None:
            return
        self.process.send_signal(sig)
        self.process.wait(START_TIMEOUT)

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
