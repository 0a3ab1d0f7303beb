"""The models being served: every named model's active version, loaded on first use.

``LoadedModels`` keeps at most ``LVAD_MAX_LOADED_MODELS`` detectors in memory,
dropping the least recently used. A request reads its model once
(``ServedModel``, immutable), so it is scored by exactly one version even if an
activation swaps the name meanwhile: activating loads the new version fully
before it replaces the old one, and the old one lives on until the requests that
hold it are answered. Replicas sharing a registry call ``refresh`` every
``LVAD_REFRESH_INTERVAL_S``: a name whose active version changed elsewhere is
loaded and swapped in the same way, so no request fails during the swap.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import ModelNotReady
from app.ops.metrics import ServiceMetrics
from app.registry.records import VersionRecord
from app.registry.registry import Registry
from model.detector import Detector
from model.errors import ArtifactError

log = logging.getLogger("lvad")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    detector: Detector
    path: Path  # its artifact: how a scoring process loads the same model


class LoadedModels:
    def __init__(
        self,
        registry: Registry,
        metrics: ServiceMetrics,
        max_loaded: int,
        redact: Callable[[str], str] = str,
        on_swap: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.max_loaded = max_loaded
        self.redact = redact  # server paths out of messages
        self.on_swap = on_swap  # after every swap, under the swap lock (e.g. settle the heap)
        self._served: OrderedDict[str, ServedModel] = OrderedDict()  # least recently used first
        self._swap = threading.Lock()  # one swap (and its bookkeeping) at a time
        self._loading: dict[str, threading.Lock] = {}  # one load per name at a time

    def get(self, name: str) -> ServedModel:
        """The name's active version, loaded if it is not (NotFoundError: no such name;
        ModelNotReady: the name has no active version yet)."""
        served = self._served.get(name)
        if served is not None:
            self._touch(name)
            return served
        with self._lock_for(name):
            served = self._served.get(name)
            if served is None:
                record = self.registry.get_model(name).active
                if record is None:
                    raise ModelNotReady(f"model {name!r} has no active version yet", field="model")
                served = self._load_and_swap(record)
        return served

    def loaded(self) -> list[ServedModel]:
        """The models in memory, least recently used first."""
        return list(self._served.values())

    def current(self, name: str) -> ServedModel | None:
        """The loaded version of ``name``, without loading it."""
        return self._served.get(name)

    def activate(self, name: str, version: int) -> VersionRecord:
        """Load ``version`` of ``name`` fully, swap it in, then record it as the active one.

        A version that cannot be loaded raises ArtifactError; the served one stays.
        """
        record = self.registry.get_version(name, version)
        with self._lock_for(name):
            self._load_and_swap(record)
            return self.registry.set_active(name, version)

    def header(self, record: VersionRecord) -> dict:
        """The artifact header of a version (the served detector's, or read from its file
        without building a scoring engine)."""
        served = self._served.get(record.name)
        if served is not None and served.version == record.version:
            return served.detector.header()
        try:
            return Detector.load(self.registry.local_file(record), engine="torch").header()
        except ArtifactError as exc:
            raise ArtifactError(self.redact(exc.message), field=exc.field) from exc

    def refresh(self) -> list[tuple[str, int]]:
        """Serve the active version the registry names now for every loaded model (another
        replica or a worker changed it), and load newly active models while there is
        room (as at start-up); the (name, version) pairs swapped in."""
        active = self.registry.active_versions()
        loaded = {served.name: served.version for served in self.loaded()}
        room = self.max_loaded - len(loaded)
        new = sorted(set(active) - set(loaded), key=lambda n: (n != "default", n))[: max(0, room)]
        changed = [name for name, version in loaded.items() if active.get(name, version) != version]
        swapped = []
        for name in changed + new:
            with self._lock_for(name):  # an activation here holds it until it is recorded
                wanted = self.registry.get_model(name).active_version
                current = self._served.get(name)
                if wanted is None or (current is not None and current.version == wanted):
                    continue
                try:
                    self._load_and_swap(self.registry.get_version(name, wanted))
                except ArtifactError:
                    continue  # logged and counted; the served version stays
                swapped.append((name, wanted))
        return swapped

    def serve_active(self) -> None:
        """At start-up: load every name's active version up to the limit, newest use first
        (the ``default`` model first); an unreadable file falls back to the newest version
        of the same name that loads."""
        names = sorted(self.registry.active_versions(), key=lambda n: (n != "default", n))
        for name in names[: self.max_loaded]:
            self._serve_some_version(name)

    def _serve_some_version(self, name: str) -> None:
        records = self.registry.list_versions(name)
        records.sort(key=lambda r: not r.active)  # the active one first, then newest first
        for record in records:
            try:
                self._load_and_swap(record)
            except ArtifactError:
                continue  # logged and counted
            if not record.active:
                active = records[0].version
                self.registry.set_active(name, record.version)
                log.warning(
                    "serving model %r version %d instead of %d", name, record.version, active
                )
            return

    def _lock_for(self, name: str) -> threading.Lock:
        with self._swap:
            return self._loading.setdefault(name, threading.Lock())

    def _touch(self, name: str) -> None:
        with contextlib.suppress(KeyError):  # unloaded meanwhile: the caller keeps its model
            self._served.move_to_end(name)

    def _load_and_swap(self, record: VersionRecord) -> ServedModel:
        started = time.perf_counter()
        try:
            path = self.registry.local_file(record)  # fetched first from a shared registry
            detector = Detector.load(path)
        except ArtifactError as exc:
            self.metrics.model_load_failures.labels(model=record.name).inc()
            log.error(
                "model %r version %d cannot be loaded: %s", record.name, record.version, exc.message
            )
            raise ArtifactError(self.redact(exc.message), field=exc.field) from exc
        seconds = time.perf_counter() - started
        served = ServedModel(record.name, record.version, detector, path)
        with self._swap:
            self._served[record.name] = served
            self._served.move_to_end(record.name)
            evicted = [self._served.popitem(last=False)[1] for _ in range(self._excess())]
            self.on_swap()
        self.metrics.set_model(served, seconds)
        for old in evicted:
            self.metrics.unset_model(old.name)
            log.info("unloaded model %r (least recently used)", old.name)
        log.info(
            "serving model %r version %d (loaded in %.3f s)", record.name, record.version, seconds
        )
        return served

    def _excess(self) -> int:
        return max(0, len(self._served) - self.max_loaded)
