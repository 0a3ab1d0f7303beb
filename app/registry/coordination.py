"""Replicas sharing a PostgreSQL registry agree through it: advisory locks.

``SchedulerLock(registry, "pull-scheduler")`` is "one scheduler at a time": each
replica asks ``holds()`` before a round of work it must not do twice (pull-mode
detectors, say); one replica holds the lock for as long as its connection lives,
and when it dies or loses the database another takes it over at its next ask.
``exclusively(registry, name)`` runs a block in one replica at a time (e.g. the
check "is the registry empty? then train the demo model"). On the embedded store
there is one process: it always holds, and nothing waits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from app.registry.database import RegistryUnavailable
from app.registry.registry import Registry

log = logging.getLogger("lvad")


def lock_key(name: str) -> int:
    """A name as PostgreSQL's 64-bit advisory lock key."""
    return int.from_bytes(hashlib.sha256(f"lvad:{name}".encode()).digest()[:8], signed=True)


class SchedulerLock:
    """Whether this replica is the one that does ``name``'s work; see the module docstring."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.key = lock_key(name)
        self._connection: sa.Connection | None = None
        self._held = False
        self._guard = threading.Lock()

    def holds(self) -> bool:
        """True while this replica holds the lock: checked against the database at each
        call (a lost connection loses the lock), and taken if it is free."""
        if not self.registry.shared:
            return True
        with self._guard:
            try:
                return self._refresh()
            except (RegistryUnavailable, sa.exc.DBAPIError):
                self._drop()
                return False

    def _refresh(self) -> bool:
        if self._connection is None:
            self._connection = self.registry.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"  # the lock belongs to the session, not a transaction
            )
        if self._held:
            self._connection.execute(sa.select(1))  # still the same session: still ours
        else:
            taken = sa.select(sa.func.pg_try_advisory_lock(self.key))
            self._held = bool(self._connection.execute(taken).scalar())
            if self._held:
                log.info("this replica now runs %s (advisory lock %d)", self.name, self.key)
        return self._held

    def _drop(self) -> None:
        if self._held:
            log.warning("lost the advisory lock of %s with its connection", self.name)
        self._held = False
        if self._connection is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None

    def release(self) -> None:
        with self._guard:
            if self._held and self._connection is not None:
                with contextlib.suppress(RegistryUnavailable, sa.exc.DBAPIError):  # gone with it
                    self._connection.execute(sa.select(sa.func.pg_advisory_unlock(self.key)))
            if self._connection is not None:
                self._connection.close()
            self._connection, self._held = None, False

    def __enter__(self) -> SchedulerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def exclusively(registry: Registry, name: str) -> Iterator[None]:
    """Run the block in one replica at a time (others wait); nothing to wait for on the
    embedded store."""
    if not registry.shared:
        yield
        return
    with registry.engine.connect() as db:
        db.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(name))))
        try:
            yield
        finally:
            db.rollback()  # ends the transaction, and the lock with it
