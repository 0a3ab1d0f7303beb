"""Real PostgreSQL and Redis servers for the scale-out tests, on free 127.0.0.1 ports.

Each server lives in its own temporary directory (data, unix socket, log) and keeps its
port for its whole life, so it can be stopped, SIGKILLed and started again on the same
data while clients reconnect to the same URL. Debian's packages provide the binaries
(tests/scale/install-servers.sh). PostgreSQL refuses to run as root: as root
(CI), initdb and pg_ctl run as the ``postgres`` user that Debian's package creates.

    with PostgresServer.running() as postgres, RedisServer.running() as redis:
        engine = sqlalchemy.create_engine(postgres.url)   # postgresql+psycopg://...
        broker = redis.url                                  # redis://127.0.0.1:PORT/0
        postgres.kill(); postgres.start()                   # a crash, then recovery
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from tests.app.live import HOST, free_port, wait_until

START_TIMEOUT = 60.0  # seconds: crash recovery after a SIGKILL included
POSTGRES_USER = "lvad"
POSTGRES_DATABASE = "lvad"
POSTGRES_OS_USER = "postgres"  # who runs PostgreSQL when the tests run as root


class MissingServer(RuntimeError):
    """A server binary is not installed (tests/scale/install-servers.sh)."""


def postgres_binary(name: str) -> str:
    """``initdb``/``pg_ctl``: from PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = Path("/usr/lib/postgresql").glob(f"*/bin/{name}")
    versions = sorted(candidates, key=lambda p: int(re.sub(r"\D", "", p.parts[-3]) or 0))
    if not versions:
        raise MissingServer(f"{name} not found (Debian package postgresql)")
    return str(versions[-1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise MissingServer("redis-server not found (Debian package redis-server)")
    return found


def server_directory(prefix: str, owner: str | None) -> Path:
    """A fresh temporary directory, owned by ``owner`` when given (we are root then)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        account = pwd.getpwnam(owner)
        os.chown(root, account.pw_uid, account.pw_gid)
    return root


@dataclass(eq=False)
class PostgresServer:
    """One PostgreSQL cluster: superuser ``lvad`` with a password, database ``lvad``."""

    root: Path  # the temporary directory: data/, the unix socket, postgres.log
    port: int
    password: str
    os_user: str | None  # the account running the server; None: this process's
    initdb: str = field(default_factory=lambda: postgres_binary("initdb"))
    pg_ctl: str = field(default_factory=lambda: postgres_binary("pg_ctl"))

    @staticmethod
    def check_installed() -> None:
        """MissingServer unless initdb, pg_ctl (and, as root, the postgres account) exist."""
        postgres_binary("initdb")
        postgres_binary("pg_ctl")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(POSTGRES_OS_USER)
            except KeyError:
                raise MissingServer("no 'postgres' account to run PostgreSQL as") from None

    @classmethod
    def create(cls) -> PostgresServer:
        """initdb in a new temporary directory; the server is not started."""
        cls.check_installed()
        os_user = POSTGRES_OS_USER if os.geteuid() == 0 else None
        server = cls(server_directory("lvad-postgres-", os_user), free_port(),
                     secrets.token_hex(12), os_user)  # fmt: skip
        server.initialise()
        return server

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[PostgresServer]:
        """A started server with its database; stopped and deleted when the block ends."""
        server = cls.create()
        try:
            server.start()
            server.create_database()
            yield server
        finally:
            server.destroy()

    # ------------------------------------------------------------------ addresses
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy's URL (psycopg 3 driver), as ``LVAD_REGISTRY_URL`` takes it."""
        return self.url_for(POSTGRES_DATABASE, driver="+psycopg")

    @property
    def dsn(self) -> str:
        """libpq's URL, for ``psycopg.connect`` and ``psql``."""
        return self.url_for(POSTGRES_DATABASE)

    def url_for(self, database: str, driver: str = "") -> str:
        return f"postgresql{driver}://{POSTGRES_USER}:{self.password}@{HOST}:{self.port}/{database}"

    # ------------------------------------------------------------------ life cycle
    def run(self, *command: str) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool as the server's account; its output in the error."""
        result = subprocess.run(
            list(command), cwd=self.root, user=self.os_user, capture_output=True, text=True,
            timeout=START_TIMEOUT + 30,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}"
                f"{result.stderr}\n--- {self.log_path} ---\n{self.log_tail()}"
            )
        return result

    def initialise(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self.os_user is not None:
            shutil.chown(password_file, self.os_user)
        self.run(self.initdb, "--pgdata", str(self.data_dir), "--username", POSTGRES_USER,
                 "--pwfile", str(password_file), "--auth-local", "trust",
                 "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
                 "--no-sync")  # fmt: skip
        password_file.unlink()
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "50",
            "shared_buffers": "32MB",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/scale/servers.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        """Start (after a stop or a SIGKILL) and wait until it accepts connections."""
        self.run(self.pg_ctl, "--pgdata", str(self.data_dir), "--log", str(self.log_path),
                 "--wait", "--timeout", str(int(START_TIMEOUT)), "start")  # fmt: skip
        wait_until(self.accepts_connections, START_TIMEOUT, "PostgreSQL to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``smart`` waits for clients, ``fast`` disconnects them."""
        self.run(self.pg_ctl, "--pgdata", str(self.data_dir), "--mode", mode, "--wait", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would; ``start`` recovers."""
        postmaster = self.pid
        if postmaster is None:
            return
        family = [postmaster, *child_pids(postmaster)]
        for pid in family:  # the postmaster first, so that it restarts no backend
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # until reaped, not only dead: PostgreSQL refuses to start while the pid in its lock
        # file exists, and a zombie's does (the init process reaps orphans within seconds)
        wait_until(lambda: not any(exists(pid) for pid in family), 30, "PostgreSQL to be reaped")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            if self.is_running():
                self.stop("immediate")
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs, else None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        # a stale file may name a pid reused by another process: check it is ours
        return pid if alive(pid) and str(self.data_dir) in command_line(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str = POSTGRES_DATABASE) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def exists(pid: int) -> bool:
    """The process exists, even as a zombie."""
    return Path(f"/proc/{pid}").exists()


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
