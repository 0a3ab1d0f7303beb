"""Start-up after an unclean stop: what the store's files and its registry disagree on.

Nothing the registry does not know is deleted. A model file in ``models/`` with no row
(the registry lost, or a crash between publishing the file and committing its row)
describes itself: it is registered again from its own header. A file there that is not
a loadable model, and a ``jobs/`` folder of no known job, go to ``lost+found/``, and
the log says so. Only ``tmp/`` is emptied: it holds what running jobs were writing,
and no job runs before this. Jobs left running are marked failed.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from app.records import INTERRUPTED, model_row
from app.store import Store, remove
from model.artifact import fsync_directory
from model.detector import Detector
from model.errors import ArtifactError

log = logging.getLogger("lvad")
VERSION_FILE = re.compile(r"v(\d{1,9})\.lvad")
ADOPTED_NOTE = "registered at start-up from its own file: the registry had no row for it"


@dataclass
class Recovery:
    failed_jobs: list[str] = field(default_factory=list)  # were running: now failed
    adopted: list[int] = field(default_factory=list)  # versions registered from their files
    moved: list[str] = field(default_factory=list)  # paths moved to lost+found/


def recover(store: Store) -> Recovery:
    """Bring the registry and the files into agreement (see the module docstring)."""
    result = Recovery(failed_jobs=store.fail_running_jobs(INTERRUPTED))
    files, jobs = store.known_files()
    if store.registry_was_missing and any(store.models_dir.iterdir()):
        log.warning("registry.sqlite3 was missing: rebuilding it from the model files")
    for path in sorted(store.models_dir.iterdir()):
        if path.relative_to(store.root).as_posix() in files:
            continue
        version = adopt(store, path)
        if version is None:
            result.moved.append(move_to_lost_and_found(store, path))
        else:
            result.adopted.append(version)
    for path in store.tmp_dir.iterdir():
        remove(path)
    for path in sorted((store.root / "jobs").iterdir()):
        if path.name not in jobs:
            result.moved.append(move_to_lost_and_found(store, path))
    report(result)
    return result


def adopt(store: Store, path: Path) -> int | None:
    """Register the model file ``path`` from its own header, under the version its name
    gives (a new one if that is taken or it has none); None if it is not a model."""
    if path.name.startswith(".") or not path.is_file():
        return None  # a temporary file of an interrupted write
    try:
        detector = Detector.load(path, engine="torch")  # reads and checks, exports nothing
    except ArtifactError as exc:
        log.warning(
            "%s is not a usable model file (%s)",
            path.name,
            exc.message.replace(str(path), path.name),
        )
        return None
    match = VERSION_FILE.fullmatch(path.name)
    metadata = detector.metadata
    with store._transaction() as db:
        version = int(match[1]) if match else 0
        if not match or db.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
            version = int(
                db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models").fetchone()[0]
            )
        file = f"models/v{version:04d}.lvad"
        row = model_row(
            detector,
            version,
            file,
            source=str(metadata.get("source") or f"recovered:{path.name}"),
            job_id=metadata.get("job_id"),
            note=ADOPTED_NOTE,
        )
        row["created"] = str(metadata.get("created") or row["created"])
        store.insert_model(db, row)
        if path != store.root / file:
            os.replace(path, store.root / file)
            fsync_directory(store.models_dir)
    log.warning(
        "model file %s registered again as version %d from its own header", path.name, version
    )
    return version


def move_to_lost_and_found(store: Store, path: Path) -> str:
    store.lost_dir.mkdir(exist_ok=True)
    target = store.lost_dir / f"{path.parent.name}-{path.name}"
    if target.exists():
        target = target.with_name(f"{target.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, target)
    relative = target.relative_to(store.root).as_posix()
    log.warning("%s is not in the registry: moved to %s", path.relative_to(store.root), relative)
    return relative


def report(result: Recovery) -> None:
    for job_id in result.failed_jobs:
        log.warning("job %s was running when the service stopped: marked failed", job_id)
    if result.adopted:
        log.warning(
            "registered %d model file(s) the registry did not know: versions %s",
            len(result.adopted),
            ", ".join(map(str, result.adopted)),
        )
