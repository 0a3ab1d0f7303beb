"""Where the registry's files live: on the store's disk (SQLite), or as rows (PostgreSQL).

The key of a file is its path relative to the store: ``models/db/v0001.lvad``,
``jobs/<id>/data.csv``. On the embedded store the file at that path is the file
itself. On a shared registry the rows of ``stored_files`` are the file, in chunks
of ``CHUNK`` bytes written in the transaction that registers it, and each replica
or worker keeps a copy at the same path under its own ``LVAD_STORE``: fetched on
first use, written to ``tmp/`` and renamed into place, never changed afterwards
(artifacts and job data are immutable once stored).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import sqlalchemy as sa

from app.errors import NotFoundError
from app.registry import tables as t

CHUNK = 4 << 20  # bytes per row: one chunk in memory at a time, either way


class LocalFiles:
    """The embedded store: every file is already where its key says."""

    shared = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def store(self, db: sa.Connection, key: str, path: Path) -> None:
        """Nothing to copy: the registry moves the file under the store itself."""

    def local(self, key: str) -> Path:
        return self.root / key

    def forget(self, prefix: str) -> None:
        """The store's own folders are removed by who owns them (retention)."""

    def job_ids(self) -> set[str]:
        return set()


class DatabaseFiles:
    """A shared registry: files as rows, cached under this process's store."""

    shared = True

    def __init__(self, engine: sa.Engine, root: Path) -> None:
        self.engine = engine
        self.root = root

    def store(self, db: sa.Connection, key: str, path: Path) -> None:
        """Write ``path`` as the rows of ``key`` in the transaction ``db`` (replacing any)."""
        db.execute(t.stored_files.delete().where(t.stored_files.c.path == key))
        with Path(path).open("rb") as source:
            for chunk, data in enumerate(iter(lambda: source.read(CHUNK), b"")):
                db.execute(t.stored_files.insert().values(path=key, chunk=chunk, data=data))

    def local(self, key: str) -> Path:
        """The cached copy of ``key``, fetched first if there is none (NotFoundError if the
        registry has no such file)."""
        target = self.root / key
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = self.root / "tmp" / f"fetch-{uuid.uuid4().hex}"
        staged.parent.mkdir(exist_ok=True)
        try:
            with staged.open("wb") as out:
                if not self._copy_rows(key, out):
                    raise NotFoundError(f"the registry holds no file {key}", field="path")
                out.flush()
                os.fsync(out.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        return target

    def _copy_rows(self, key: str, out) -> bool:  # type: ignore[no-untyped-def]
        files = t.stored_files
        with self.engine.connect() as db:
            chunks = db.execute(
                sa.select(files.c.chunk).where(files.c.path == key).order_by(files.c.chunk)
            ).scalars()
            found = False
            for chunk in list(chunks):  # one chunk in memory at a time
                out.write(
                    db.execute(
                        sa.select(files.c.data).where(files.c.path == key, files.c.chunk == chunk)
                    ).scalar_one()
                )
                found = True
            db.rollback()
        return found

    def job_ids(self) -> set[str]:
        """The jobs whose data is stored (``jobs/<id>/...``)."""
        files = t.stored_files
        with self.engine.connect() as db:
            paths = db.execute(
                sa.select(files.c.path).where(files.c.path.startswith("jobs/")).distinct()
            ).scalars()
            return {path.split("/")[1] for path in paths}

    def forget(self, prefix: str) -> None:
        """Delete the rows of every file under ``prefix`` (e.g. ``jobs/<id>/``)."""
        with self.engine.begin() as db:
            db.execute(t.stored_files.delete().where(t.stored_files.c.path.startswith(prefix)))
