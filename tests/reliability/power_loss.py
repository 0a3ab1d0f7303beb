"""Power loss while a model is published, simulated as SQLite's crash tests do.

``python -m tests.reliability.power_loss MODEL STORE...`` publishes MODEL into each
STORE the way a job does (the child writes its artifact into ``tmp/``,
then the store registers it and makes it active), through the real code, while a
recorder notes every step that matters for durability: files created, ``fsync`` of
files and directories, renames, and the registry's ``COMMIT``. At step CRASH_AT the
process ends at once (``os._exit``), before the step: the Nth STORE is published by
a forked child that crashes at step N (its journal: ``STORE/../journal.jsonl``), so
torch is imported once for all of them.

``lose_power(journal)`` then undoes what the disk had not been told to keep, in the
worst way a file system may: a rename or a new file whose directory was not fsynced
afterwards is undone, and a new file whose data was not fsynced is cut to nothing.
The registry (SQLite, WAL, ``synchronous=FULL``) keeps exactly its committed
transactions through a crash: that is SQLite's promise, not simulated here.

The recorder wraps ``os.open``, ``os.fsync``, ``os.replace`` and the registry's
commit (its SQLAlchemy dialect's ``do_commit``): each call still does the real thing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

CREATE = os.O_CREAT


class Recorder:
    def __init__(self, journal: Path, crash_at: int) -> None:
        self.journal = journal.open("a")
        self.crash_at = crash_at
        self.steps = 0

    def step(self, kind: str, **details: Any) -> None:
        self.steps += 1
        if self.steps == self.crash_at:
            self.journal.write(json.dumps({"crash": kind, **details}) + "\n")
            self.journal.flush()
            os._exit(137)  # power lost: nothing after this happens

    def note(self, kind: str, **details: Any) -> None:
        self.journal.write(json.dumps({"op": kind, **details}) + "\n")
        self.journal.flush()

    def install(self) -> None:
        real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

        def recorded_open(path, flags, mode=0o777, *, dir_fd=None):
            created = flags & CREATE and not os.path.exists(path)
            if created:
                self.step("create", path=os.path.abspath(path))
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            if created:
                self.note("create", path=os.path.abspath(path))
            return fd

        def recorded_fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.step("fsync", path=path)
            real_fsync(fd)
            self.note("fsync", path=path)

        def recorded_replace(source, target, **kwargs):
            source, target = os.path.abspath(source), os.path.abspath(target)
            self.step("replace", source=source, target=target)
            real_replace(source, target, **kwargs)
            self.note("replace", source=source, target=target)

        os.open, os.fsync, os.replace = recorded_open, recorded_fsync, recorded_replace


def record_commits(registry: Any, recorder: Recorder) -> None:
    """Each commit of the registry's database a step."""
    dialect = registry.engine.dialect
    real_commit = dialect.do_commit

    def recorded_commit(dbapi_connection: Any) -> None:
        recorder.step("commit")
        real_commit(dbapi_connection)
        recorder.note("commit")

    dialect.do_commit = recorded_commit


def publish(store: Path, detector: Any, crash_at: int, journal: Path) -> int:
    """What a job does to publish ``detector``: save, register, activate. Returns the
    steps."""
    from app.registry.registry import Registry

    registry = Registry(store)
    recorder = Recorder(journal, crash_at)
    recorder.install()
    record_commits(registry, recorder)
    artifact = detector.save(registry.tmp_dir / "job-crash.lvad")  # the training child
    record = registry.register_version(
        "default", artifact, source="upload:crash.csv", job_id="crash"
    )
    registry.set_active("default", record.version)
    registry.close()
    return recorder.steps


def lose_power(journal: Path) -> list[str]:
    """Undo, newest first, every operation the disk was not told to keep; what was undone."""
    ops = [json.loads(line) for line in journal.read_text().splitlines()]
    ops = [op for op in ops if "op" in op]
    undone = []
    for index in range(len(ops) - 1, -1, -1):
        op, later = ops[index], ops[index + 1 :]
        if op["op"] == "replace" and not synced(later, os.path.dirname(op["target"])):
            if os.path.exists(op["target"]):
                os.replace(op["target"], op["source"])
                undone.append(f"rename {op['target']} back to {op['source']}")
        elif op["op"] == "create":
            names = [op["path"]] + renamed(op["path"], later)  # the file under each name
            where = next((name for name in reversed(names) if os.path.exists(name)), None)
            if where is None:
                continue
            if not any(synced(later, name) for name in names):
                os.truncate(where, 0)
                undone.append(f"data of {where} lost")
            if where == op["path"] and not synced(later, os.path.dirname(where)):
                os.unlink(where)
                undone.append(f"{where} lost")
    return undone


def renamed(path: str, ops: list[dict]) -> list[str]:
    """The names ``path`` took by the renames in ``ops``, in order."""
    names = []
    for op in ops:
        if op["op"] == "replace" and op["source"] == (names[-1] if names else path):
            names.append(op["target"])
    return names


def synced(ops: list[dict], path: str) -> bool:
    return any(op["op"] == "fsync" and op["path"] == path for op in ops)


def publish_each(model: Path, stores: list[Path]) -> list[int]:
    """Publish into ``stores[i]`` in a forked child that crashes at step i + 1; the exit
    codes (137: crashed, 0: all steps done)."""
    from model.detector import Detector

    detector = Detector.load(model, engine="torch")  # no scoring engine: no threads
    codes = []
    for crash_at, store in enumerate(stores, 1):
        child = os.fork()
        if child == 0:
            try:
                steps = publish(store, detector, crash_at, store.parent / "journal.jsonl")
                print(json.dumps({"store": str(store), "steps": steps}), flush=True)
            finally:
                os._exit(0)
        codes.append(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    return codes


if __name__ == "__main__":
    print(
        json.dumps({"exit_codes": publish_each(Path(sys.argv[1]), list(map(Path, sys.argv[2:])))})
    )
