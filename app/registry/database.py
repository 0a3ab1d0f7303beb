"""The registry's database: an SQLAlchemy engine, and its schema brought up to date.

SQLite (the embedded default, ``registry.sqlite3`` in the store) runs in WAL mode
with ``synchronous=FULL``, so a commit survives power loss, not only a killed
process. Writes start with ``BEGIN IMMEDIATE``: a transaction that will write
takes the write lock first, instead of failing half-way when two writers meet.
Reads run without an explicit transaction.

PostgreSQL (scale-out, ``LVAD_REGISTRY_URL``) is reached through a pool whose
connections are tested before each use (``pool_pre_ping``), so a restarted server
costs the requests made while it was down (503, ``registry_unavailable``) and
nothing after: no replica or worker needs a restart of its own.

The schema is Alembic's (``app/registry/migrations``). A store created before
migrations existed has the first revision's tables and no ``alembic_version``
table: it is stamped with that revision, then upgraded like any other. On
PostgreSQL the upgrade holds an advisory lock, so replicas that start together
migrate one after the other (the later ones find nothing to do).
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from model.errors import LvadError

log = logging.getLogger("lvad")

MIGRATIONS = Path(__file__).parent / "migrations"
UNVERSIONED = "0001"  # the schema of stores made before migrations
MIGRATION_LOCK = 0x6C766164_00000001  # advisory lock key: "lvad", 1
QUEUE_LOCK = 0x6C766164_00000002  # held while a job is added under LVAD_MAX_QUEUED_JOBS
CONNECT_TIMEOUT_S = 5


class RegistryUnavailable(LvadError):
    """The shared registry's database cannot be reached (a restart, a network fault)."""

    status_code = 503
    code = "registry_unavailable"
    retry_after = 5


def postgres_engine(url: str, pool_size: int) -> sa.Engine:
    """An engine on the PostgreSQL registry ``url``; see the module docstring. Errors of
    a lost or refused connection raise RegistryUnavailable (the message names no
    address or password)."""
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=30,
        pool_recycle=1800,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
    if engine.dialect.name != "postgresql":
        raise LvadError(f"LVAD_REGISTRY_URL: a PostgreSQL URL, not {engine.dialect.name}")

    @sa.event.listens_for(engine, "handle_error")
    def unavailable(context: sa.engine.ExceptionContext) -> None:
        if context.is_pre_ping:
            return  # the pool replaces the connection it tested: nothing failed
        if context.is_disconnect or isinstance(context.original_exception, _refused()):
            raise RegistryUnavailable(
                "the registry database cannot be reached; retry in a few seconds"
            ) from context.original_exception

    return engine


def _refused() -> tuple[type[BaseException], ...]:
    import psycopg

    return (psycopg.OperationalError,)


def sqlite_engine(path: Path) -> sa.Engine:
    """An engine on the SQLite file ``path``; see the module docstring."""
    engine = sa.create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
    )

    @sa.event.listens_for(engine, "connect")
    def configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # transactions are ours (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade(engine: sa.Engine) -> None:
    """Create or migrate the schema to the newest revision, in one transaction (logged
    when it changes anything; Alembic's own progress lines are kept quiet)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        unversioned = _unversioned(connection)
        if unversioned:
            command.stamp(config, UNVERSIONED)
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(config, "head")
        after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        was = "none" if before is None else before + (" (unversioned)" if unversioned else "")
        log.info("registry schema migrated from revision %s to %s", was, after)


def _unversioned(connection: sa.Connection) -> bool:
    tables = set(sa.inspect(connection).get_table_names())
    return "alembic_version" not in tables and {"models", "jobs"} <= tables


def check_current(engine: sa.Engine) -> None:
    """LvadError unless the schema is at the newest revision (for read-only use)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise LvadError(
            f"the store's registry is at revision {current}, this version needs {head}: "
            "start the service on it once to migrate it"
        )
