"""Fixtures of the scale-out tests: a real PostgreSQL and a real Redis (tests/scale/servers.py).

``postgres_server`` and ``redis_server`` last one test module: a test may stop, SIGKILL
and start them (``server.kill(); server.start()``) and must leave them running. A missing
binary skips the tests, except in CI (CI=true), where it fails: .ci/run installs both
(tests/scale/install-servers.sh).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import missing_component
from tests.scale.servers import MissingServer, PostgresServer, RedisServer


def require_installed(server_type: type[PostgresServer] | type[RedisServer]) -> None:
    """Skip the test (fail it with CI=true) when the server is not installed."""
    try:
        server_type.check_installed()
    except MissingServer as missing:
        message = f"{missing}: run tests/scale/install-servers.sh postgresql redis-server"
        missing_component(message)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL on a free 127.0.0.1 port; ``.url`` is ``postgresql+psycopg://...``."""
    require_installed(PostgresServer)
    with PostgresServer.running() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """redis-server on a free 127.0.0.1 port; ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    require_installed(RedisServer)
    with RedisServer.running() as server:
        yield server


@pytest.fixture
def postgres_installed() -> None:
    """For tests that start their own PostgresServer."""
    require_installed(PostgresServer)


@pytest.fixture
def redis_installed() -> None:
    require_installed(RedisServer)


@pytest.fixture
def database(postgres_server) -> str:
    """A new, empty database on the module's server: its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    return postgres_server.url_for(name, driver="+psycopg")
