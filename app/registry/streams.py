"""The alarm state of each named stream a model scores, kept in the registry.

A stream (``ScoreRequest.stream``, or one group of a pull-mode detector) is scored
in consecutive chunks; its adaptive threshold, regime changes and drift
(``model/stream.py``) carry from one chunk to the next, across requests and restarts.
A state belongs to the version that advanced it: when another version is active,
the stream starts afresh from that version's validation scores.

Saves are optimistic: each row has a revision, and a save that finds another
revision than the one it read (two requests of one stream at once, on one replica
or several) fails with 409, and the caller sends the chunk again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.errors import ConflictError, LimitError, full_disk_is_507
from app.registry import tables as t
from app.registry.records import utc_now
from model.errors import ArtifactError
from model.stream import StreamState


@dataclass(frozen=True)
class SavedStream:
    version: int  # the model version that advanced it
    revision: int  # saves so far
    state: StreamState | None  # None: it no longer reads; the stream starts afresh


class StreamStates:
    """Read and save stream states in the registry's database."""

    def __init__(self, engine: sa.Engine, max_streams: int) -> None:
        self.engine = engine
        self.max_streams = max_streams  # per model

    def get(self, name: str, stream: str) -> SavedStream | None:
        """The saved state of ``stream`` of model ``name`` (None: a new stream, or a state
        that no longer reads: the stream then starts afresh)."""
        with self.engine.connect() as db:
            row = db.execute(sa.select(t.stream_states).where(_key(name, stream))).first()
            db.rollback()
        if row is None:
            return None
        try:
            return SavedStream(row.version, row.revision, StreamState.from_dict(row.state))
        except ArtifactError:
            return SavedStream(row.version, row.revision, None)

    def save(
        self, name: str, stream: str, version: int, state: StreamState, read: SavedStream | None
    ) -> None:
        """Save ``state`` as the stream's state after ``read`` (None: the stream is new).
        ConflictError if the stream was saved since ``read``; LimitError if it is new
        and the model already has ``max_streams``."""
        values = {"version": version, "state": state.to_dict(), "updated": utc_now()}
        with full_disk_is_507("the stream state could not be saved"), self.engine.begin() as db:
            if read is None:
                self._insert(db, name, stream, values)
                return
            changed = db.execute(
                t.stream_states.update()
                .where(_key(name, stream) & (t.stream_states.c.revision == read.revision))
                .values(revision=read.revision + 1, **values)
            ).rowcount
            if changed != 1:
                raise _conflict(stream)

    def _insert(self, db: sa.Connection, name: str, stream: str, values: dict) -> None:
        count = db.execute(
            sa.select(sa.func.count()).where(t.stream_states.c.name == name)
        ).scalar_one()
        if count >= self.max_streams:
            raise LimitError(
                f"model {name!r} keeps the state of {count:,} streams, the most allowed "
                f"(LVAD_MAX_STREAMS = {self.max_streams:,}); reuse a stream name",
                field="stream",
            )
        try:
            with db.begin_nested():
                db.execute(
                    t.stream_states.insert().values(name=name, stream=stream, revision=1, **values)
                )
        except sa.exc.IntegrityError:
            raise _conflict(stream) from None


def _key(name: str, stream: str) -> sa.ColumnElement[bool]:
    return (t.stream_states.c.name == name) & (t.stream_states.c.stream == stream)


def _conflict(stream: str) -> ConflictError:
    return ConflictError(
        f"stream {stream!r} was advanced by another request at the same time; send this "
        "chunk again (a stream's chunks must be sent one after the other)",
        field="stream",
    )


class MemoryStreamStates:
    """Stream states of one process, never written: for a read-only store
    (``lvad detectors run``), where streams start afresh with each run."""

    def __init__(self) -> None:
        self._saved: dict[tuple[str, str], SavedStream] = {}

    def get(self, name: str, stream: str) -> SavedStream | None:
        return self._saved.get((name, stream))

    def save(
        self, name: str, stream: str, version: int, state: StreamState, read: SavedStream | None
    ) -> None:
        revision = 1 if read is None else read.revision + 1
        self._saved[(name, stream)] = SavedStream(version, revision, state)
