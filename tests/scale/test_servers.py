"""The scale-out fixtures themselves: a real PostgreSQL and Redis on loopback that clients
reach by URL, and that keep their data across a stop, a restart and a SIGKILL."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from tests.scale.servers import POSTGRES_OS_USER, PostgresServer, RedisServer, alive


def owner_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


# ---------------------------------------------------------------- PostgreSQL
def test_postgres_serves_its_database_on_loopback(postgres_server: PostgresServer):
    url = urlsplit(postgres_server.url)
    assert url.scheme == "postgresql+psycopg"  # SQLAlchemy's dialect+driver for psycopg 3
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", postgres_server.port, "/lvad")
    with psycopg.connect(postgres_server.dsn) as connection:
        row = connection.execute(
            "SELECT current_user, current_database(), host(inet_server_addr()),"
            " inet_server_port(), current_setting('server_version_num')::int"
        ).fetchone()
    assert row[:4] == ("lvad", "lvad", "127.0.0.1", postgres_server.port)
    assert row[4] >= 150000  # PostgreSQL 15 or later
    socket = postgres_server.root / f".s.PGSQL.{postgres_server.port}"
    assert socket.is_socket()  # the unix socket lives in the server's own directory


def test_postgres_checks_the_password(postgres_server: PostgresServer):
    wrong = postgres_server.dsn.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_postgres_runs_as_the_postgres_account_when_root(postgres_server: PostgresServer):
    expected = pwd.getpwnam(POSTGRES_OS_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert owner_uid(postgres_server.pid) == expected


def test_postgres_restart_keeps_data_and_drops_old_connections(postgres_server):
    with psycopg.connect(postgres_server.dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE restarted (id int PRIMARY KEY, note text)")
        connection.execute("INSERT INTO restarted VALUES (1, 'before the restart')")
        old_pid = postgres_server.pid
        postgres_server.restart()
        assert postgres_server.pid not in (None, old_pid)
        with pytest.raises(psycopg.OperationalError):
            connection.execute("SELECT 1")  # the old session is gone: clients must reconnect
    with psycopg.connect(postgres_server.dsn) as connection:
        assert connection.execute("SELECT note FROM restarted").fetchall() == [
            ("before the restart",)
        ]


def test_postgres_recovers_committed_data_after_sigkill(postgres_server):
    with psycopg.connect(postgres_server.dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE crashed (id int PRIMARY KEY)")
        connection.execute("INSERT INTO crashed SELECT generate_series(1, 1000)")
        backend = connection.info.backend_pid
    postmaster = postgres_server.pid
    postgres_server.kill()
    assert not alive(postmaster) and not alive(backend) and not postgres_server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_server.dsn, connect_timeout=2)
    postgres_server.start()  # same port, same data: crash recovery from the WAL
    assert "automatic recovery in progress" in postgres_server.log_path.read_text()
    with psycopg.connect(postgres_server.dsn) as connection:
        assert connection.execute("SELECT count(*) FROM crashed").fetchone() == (1000,)


def test_postgres_directory_is_removed_when_done(postgres_installed):
    with PostgresServer.running() as server:
        root = server.root
        postmaster = server.pid
        assert alive(postmaster)
    assert not root.exists() and not alive(postmaster)


# ---------------------------------------------------------------- Redis
def test_redis_answers_on_loopback(redis_server: RedisServer):
    url = urlsplit(redis_server.url)
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "redis", "127.0.0.1", redis_server.port, "/0"
    )  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as client:
        info = client.info("server")
        assert info["tcp_port"] == redis_server.port
        assert int(str(info["redis_version"]).split(".")[0]) >= 7
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"


def test_redis_restart_keeps_data(redis_server: RedisServer):
    with redis.Redis.from_url(redis_server.url) as client:
        client.rpush("queue", "job-1", "job-2")
        redis_server.restart()
        assert client.lrange("queue", 0, -1) == [b"job-1", b"job-2"]  # redis-py reconnects
        client.delete("queue")


def test_redis_keeps_acknowledged_writes_across_sigkill(redis_server: RedisServer):
    with redis.Redis.from_url(redis_server.url) as client:
        client.rpush("killed", *[f"job-{n}" for n in range(100)])
        pid = redis_server.pid
        redis_server.kill()
        assert not alive(pid)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        redis_server.start()  # the append-only file, fsynced on every write, is replayed
        assert client.llen("killed") == 100


def test_redis_directory_is_removed_when_done(redis_installed):
    with RedisServer.running() as server:
        root = server.root
        pid = server.pid
    assert not root.exists() and not alive(pid)
