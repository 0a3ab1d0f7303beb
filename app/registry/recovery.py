"""Start-up after an unclean stop: what the store's files and its registry disagree on.

Nothing the registry does not know is deleted. A model file under ``models/`` with no
row (the registry lost, or a crash between publishing the file and committing its row)
describes itself: it is registered again from its own header, as a version of the
model its header names (or its directory: ``models/<name>/``; ``default`` for a file
directly in ``models/``); a model left without an active version (its registry lost)
serves its newest adopted version. A file there that is not a loadable model, and a ``jobs/``
folder of no known job, go to ``lost+found/``, and the log says so. Only ``tmp/`` is
emptied: it holds what running jobs were writing, and no job runs before this. Jobs
left running are marked failed.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from app.registry.records import DEFAULT_MODEL, INTERRUPTED, MODEL_NAME
from app.registry.registry import Registry, remove
from model.detector import Detector
from model.errors import ArtifactError

log = logging.getLogger("lvad")
VERSION_FILE = re.compile(r"v(\d{1,9})\.lvad")
ADOPTED_NOTE = "registered at start-up from its own file: the registry had no row for it"


@dataclass
class Recovery:
    failed_jobs: list[str] = field(default_factory=list)  # were running: now failed
    adopted: list[tuple[str, int]] = field(default_factory=list)  # registered from files
    moved: list[str] = field(default_factory=list)  # paths moved to lost+found/


def recover(registry: Registry) -> Recovery:
    """Bring the registry and the files into agreement (see the module docstring). A
    shared registry's files are rows and its jobs run on workers (the heartbeat rule of
    ``app/registry/claims.py`` covers those): only this replica's ``tmp/`` is emptied."""
    if registry.shared:
        for path in registry.tmp_dir.iterdir():
            remove(path)
        return Recovery()
    result = Recovery(failed_jobs=registry.fail_running_jobs(INTERRUPTED))
    files, jobs = registry.known_files()
    models = registry.models_dir
    if registry.registry_was_missing and any(models.iterdir()):
        log.warning("registry.sqlite3 was missing: rebuilding it from the model files")
    for path in sorted(p for p in models.rglob("*") if p.is_file()):
        if path.relative_to(registry.root).as_posix() in files:
            continue
        adopted = adopt(registry, path)
        if adopted is None:
            result.moved.append(move_to_lost_and_found(registry, path))
        else:
            result.adopted.append(adopted)
    activate_adopted(registry, result.adopted)
    for path in registry.tmp_dir.iterdir():
        remove(path)
    for path in sorted((registry.root / "jobs").iterdir()):
        if path.name not in jobs:
            result.moved.append(move_to_lost_and_found(registry, path))
    report(result)
    return result


def activate_adopted(registry: Registry, adopted: list[tuple[str, int]]) -> None:
    """Names with adopted versions and no active one (the registry was lost) serve their
    newest adopted version, as they served a version before."""
    active = registry.active_versions()
    newest: dict[str, int] = {}
    for name, version in adopted:
        newest[name] = max(version, newest.get(name, 0))
    for name, version in sorted(newest.items()):
        if name not in active:
            registry.set_active(name, version)
            log.warning("model %r: version %d (adopted) is its active version", name, version)


def adopt(registry: Registry, path: Path) -> tuple[str, int] | None:
    """Register the model file ``path`` from its own header, under the version its file
    name gives (a new one if that is taken or it has none); None if it is not a model."""
    if path.name.startswith("."):
        return None  # a temporary file of an interrupted write
    try:
        detector = Detector.load(path, engine="torch")  # reads and checks, exports nothing
    except ArtifactError as exc:
        shown = exc.message.replace(str(path), path.name)
        log.warning("%s is not a usable model file (%s)", path.name, shown)
        return None
    match = VERSION_FILE.fullmatch(path.name)
    name = model_name_of(registry, path, detector.metadata.get("model"))
    record = registry.adopt_version(
        name, path, detector, int(match[1]) if match else None, ADOPTED_NOTE
    )
    log.warning(
        "model file %s registered again as model %r version %d from its own header",
        path.relative_to(registry.root),
        record.name,
        record.version,
    )
    return record.name, record.version


def model_name_of(registry: Registry, path: Path, named: object) -> str:
    """The model a file belongs to: the name its header gives, else its directory's."""
    if isinstance(named, str) and re.fullmatch(MODEL_NAME, named):
        return named
    folder = path.parent
    if folder != registry.models_dir and re.fullmatch(MODEL_NAME, folder.name):
        return folder.name
    return DEFAULT_MODEL


def move_to_lost_and_found(registry: Registry, path: Path) -> str:
    registry.lost_dir.mkdir(exist_ok=True)
    target = registry.lost_dir / f"{path.parent.name}-{path.name}"
    if target.exists():
        target = target.with_name(f"{target.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, target)
    relative = target.relative_to(registry.root).as_posix()
    log.warning("%s is not in the registry: moved to %s", path.relative_to(registry.root), relative)
    return relative


def report(result: Recovery) -> None:
    for job_id in result.failed_jobs:
        log.warning("job %s was running when the service stopped: marked failed", job_id)
    if result.adopted:
        log.warning(
            "registered %d model file(s) the registry did not know: %s",
            len(result.adopted),
            ", ".join(f"{name} v{version}" for name, version in result.adopted),
        )
