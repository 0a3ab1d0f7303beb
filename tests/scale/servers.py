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

from tests.scale.postgres_server import POSTGRES_OS_USER, PostgresServer
from tests.scale.processes import MissingServer, alive
from tests.scale.redis_server import RedisServer

__all__ = ["POSTGRES_OS_USER", "MissingServer", "PostgresServer", "RedisServer", "alive"]
