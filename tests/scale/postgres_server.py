"""A real PostgreSQL cluster on a free 127.0.0.1 port (tests/scale/servers.py)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.app.live import HOST, free_port, wait_until
from tests.scale.processes import (
    START_TIMEOUT,
    MissingServer,
    alive,
    child_pids,
    command_line,
    exists,
    server_directory,
)

POSTGRES_USER = "lvad"
POSTGRES_DATABASE = "lvad"
POSTGRES_OS_USER = "postgres"  # who runs PostgreSQL when the tests run as root


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
