"""Scoring in a child process beside the event loop.

The server's own process parses request bodies and builds responses; both hold
the interpreter lock for milliseconds at a time (orjson and numpy on a large
body). A model call made in that process must take the lock back after every
torch operation, so beside that work the model ran markedly slower than alone
(docs/benchmarks.md: the service against the raw model). Here the model runs in
a "spawn" child with an interpreter of its own: the server sends the windows or
series, the child answers with the ``Scored`` arrays.

The child loads each model version from its artifact file (the same safe loader
the server uses) the first time a call names it, and keeps the most recently used
few (``kept_models``), so a call is always scored by exactly the version the
caller chose. One worker scores
one call at a time, in order. A child that dies (killed, out of memory) fails the
calls in flight with 503 and is replaced by a fresh one; a child whose server is
gone exits by itself. Shared-memory blocks are named after the store
(``lvad-<hash of its path>-<random>``), so a server that starts on the store removes
the blocks a killed one left in ``/dev/shm`` (a killed process group takes its
resource tracker with it, which would otherwise have removed them).

This module imports only the model core and the error classes, never FastAPI or
the service.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import ScoringUnavailable
from app.ops.malloc import reuse_freed_buffers
from model.alarm import Scored
from model.detector import Detector
from model.stream import StreamState

log = logging.getLogger("lvad")

ORPHAN_CHECK_S = 1.0
IN_FLIGHT = 2  # calls handed to the child at once: the one it scores and the next
INLINE_BYTES = 32 * 1024  # smaller arrays go through the pipe: one write, no block to set up
SHM_DIR = "/dev/shm"
ALIGN = 64


# ---------------------------------------------------------------------- array transport
@dataclass(frozen=True)
class SharedArrays:
    """Named arrays copied into one shared-memory block; only its name and layout are
    pickled. The pipe would carry a 512-window result (~2 MB) in 64 KiB pieces, and
    each piece waits for the receiving process's interpreter lock, which a server
    parsing the next request holds for milliseconds: measured, the child then stalled
    on its writes and scored fewer windows per second.

    The writer creates the block and leaves it to the reader, who copies the arrays out
    and unlinks it. Server and child share one resource tracker, where the writer's
    registration stays until the reader's unlink: a block whose reader never came (a
    child killed mid-call) is removed when the server exits.
    """

    name: str
    layout: tuple[tuple[str, tuple[int, ...], str, int], ...]  # (key, shape, dtype, offset)

    @classmethod
    def put(
        cls, arrays: dict[str, np.ndarray], prefix: str = "lvad-"
    ) -> SharedArrays | dict[str, np.ndarray]:
        """The arrays in a new block named ``prefix<random>``; the arrays themselves if
        shared memory is short."""
        layout, size = [], 0
        for key, array in arrays.items():
            layout.append((key, array.shape, array.dtype.str, size))
            size += -(-array.nbytes // ALIGN) * ALIGN
        if size <= INLINE_BYTES:
            return arrays
        if not _shm_has_room(size):
            return arrays  # through the pipe: slower under load, never a crash
        try:
            block = SharedMemory(name=prefix + secrets.token_hex(8), create=True, size=size)
        except OSError:  # out of file descriptors or space: the pipe still works
            return arrays
        try:
            for (_, shape, dtype, offset), array in zip(layout, arrays.values(), strict=True):
                np.ndarray(shape, dtype, buffer=block.buf, offset=offset)[...] = array
        except BaseException:
            _free(block)
            raise
        block.close()
        return cls(block.name, tuple(layout))

    def take(self) -> dict[str, np.ndarray]:
        """Copy the arrays out and free the block."""
        block = SharedMemory(name=self.name)  # registered again here; unlink() unregisters
        try:
            return {
                key: np.ndarray(shape, dtype, buffer=block.buf, offset=offset).copy()
                for key, shape, dtype, offset in self.layout
            }
        finally:
            _free(block)

    def discard(self) -> None:
        """Free the block if its reader never took it."""
        try:
            block = SharedMemory(name=self.name)
        except FileNotFoundError:
            return
        _free(block)


def _free(block: SharedMemory) -> None:
    block.close()
    block.unlink()


def _shm_has_room(size: int) -> bool:
    """Room for ``size`` bytes with half of the shared-memory file system to spare
    (a container's is 64 MB unless configured; writing past it kills the writer)."""
    try:
        stat = os.statvfs(SHM_DIR)
    except OSError:
        return False
    return size <= stat.f_bavail * stat.f_frsize // 2


def _unpack(packed: SharedArrays | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return packed.take() if isinstance(packed, SharedArrays) else packed


def block_prefix(store: Path) -> str:
    """The name prefix of the shared-memory blocks of the server on ``store``."""
    digest = hashlib.sha256(str(Path(store).resolve()).encode()).hexdigest()[:12]
    return f"lvad-{digest}-"


def remove_stale_blocks(prefix: str) -> int:
    """Remove the blocks named ``prefix*`` (call while holding the store's lock, before
    scoring starts: they were left by a killed server); how many there were."""
    removed = 0
    for path in Path(SHM_DIR).glob(prefix + "*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


# ---------------------------------------------------------------------- the child
_models: OrderedDict[str, Detector] = OrderedDict()
_kept = 2  # loaded versions the child keeps (set by _init_child)
_prefix = "lvad-"  # of the blocks this child creates: its server's


def _init_child(torch_threads: int, server: int, kept_models: int, prefix: str) -> None:
    global _kept, _prefix
    _kept, _prefix = kept_models, prefix
    # Ctrl-C and a SIGTERM to the process group are for the server, which finishes the
    # requests in flight and then stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reuse_freed_buffers()
    if torch_threads:  # OMP_NUM_THREADS came with the server's environment
        import torch

        torch.set_num_threads(torch_threads)

    def exit_when_orphaned() -> None:  # the server was killed: nobody will call again
        while os.getppid() == server:
            time.sleep(ORPHAN_CHECK_S)
        os._exit(0)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def _detector(path: str) -> Detector:
    if path not in _models:
        _models[path] = Detector.load(path)
        while len(_models) > _kept:
            _models.popitem(last=False)
    _models.move_to_end(path)
    return _models[path]


Packed = SharedArrays | dict[str, np.ndarray]


# what the child answers: the Scored arrays, the threshold, the model call's seconds and,
# for a stream, its state after the series
Answer = tuple[Packed, float, float, StreamState | None]


def _answer(scored: Scored, seconds: float, stream: StreamState | None = None) -> Answer:
    out = {f.name: getattr(scored, f.name) for f in fields(scored) if f.name != "threshold"}
    return SharedArrays.put(out, _prefix), scored.threshold, seconds, stream


def _score_windows(path: str, arrays: Packed) -> Answer:
    """``Detector.score_windows`` in the child: the ``Scored`` arrays, the threshold and
    the seconds the model call took."""
    windows = _unpack(arrays)["windows"]  # first: the caller leaves the block to us
    detector = _detector(path)
    started = time.perf_counter()
    scored = detector.score_windows(windows)
    return _answer(scored, time.perf_counter() - started)


def _score_series(
    path: str, arrays: Packed, stride: int | None, causal: bool, stream: StreamState | None
) -> Answer:
    """``Detector.score`` of a series (and its context, if any) in the child, or
    ``Detector.score_stream`` when it is the next chunk of a ``stream``."""
    given = _unpack(arrays)
    detector = _detector(path)
    values, context = given["values"], given.get("context")
    started = time.perf_counter()
    if stream is not None:
        scored, stream = detector.score_stream(values, stream, context)
    else:
        scored = detector.score(values, stride=stride, causal=causal, context=context)
    return _answer(scored, time.perf_counter() - started, stream)


def _pid() -> int:
    return os.getpid()


# ---------------------------------------------------------------------- the server's handle
class ScoringProcess:
    """The server's handle on its scoring child; thread-safe."""

    def __init__(
        self,
        torch_threads: int = 0,
        on_restart: Callable[[], None] | None = None,
        kept_models: int = 2,
        prefix: str = "lvad-",
    ) -> None:
        self.torch_threads = torch_threads
        self.kept_models = kept_models  # versions the child keeps loaded
        self.prefix = prefix  # of the shared-memory blocks (block_prefix of the store)
        self.on_restart = on_restart  # called after each replacement of a dead child
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # guards replacing the pool
        # bounds the shared memory in use: blocks exist only for calls handed over
        self._in_flight = threading.BoundedSemaphore(IN_FLIGHT)
        self.restarts = 0

    def start(self) -> None:
        """Start the child; it imports torch for a few seconds, and calls made meanwhile
        wait for it (the server is ready at once: small calls never need the child)."""
        with self._lock:
            self._pool = self._new_pool()
            self._pool.submit(_pid)  # spawns the child now, not at the first call

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def score_windows(self, path: Path | str, windows: np.ndarray) -> tuple[Scored, float]:
        """``Detector.load(path).score_windows(windows)`` in the child, and the seconds it
        took there (without the transfers or the wait for earlier calls)."""
        scored, seconds, _ = self._call(_score_windows, path, {"windows": windows})
        return scored, seconds

    def score_series(
        self,
        path: Path | str,
        values: np.ndarray,
        *,
        stride: int | None = None,
        causal: bool = False,
        context: np.ndarray | None = None,
        stream: StreamState | None = None,
    ) -> tuple[Scored, float, StreamState | None]:
        """``Detector.load(path).score(values, ...)`` in the child, and its seconds there;
        with ``stream``, ``score_stream`` and the stream's state after the series."""
        arrays = {"values": values} | ({} if context is None else {"context": context})
        return self._call(_score_series, path, arrays, stride, causal, stream)

    def _call(
        self, function: Any, path: Path | str, arrays: dict[str, np.ndarray], *options: Any
    ) -> tuple[Scored, float, StreamState | None]:
        with self._in_flight:
            packed = SharedArrays.put({k: np.asarray(v) for k, v in arrays.items()}, self.prefix)
            try:
                result, threshold, seconds, stream = self._run(
                    function, str(path), packed, *options
                )
            except BaseException:
                if isinstance(packed, SharedArrays):
                    packed.discard()  # the child took it, unless it died first
                raise
            return Scored(**_unpack(result), threshold=threshold), seconds, stream

    def _run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the child. A child found dead before the call is
        replaced and the call goes to the new one; a child that dies during the call
        fails it (503): the call itself may have killed it (out of memory)."""
        submitted = self._submit(function, *args)
        if submitted is None:  # the child had died: start another, once
            submitted = self._submit(function, *args)
        if submitted is None:
            raise ScoringUnavailable("the scoring process cannot be started; see the log")
        pool, future = submitted
        try:
            return future.result()
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise ScoringUnavailable(
                "the scoring process stopped during this request; a new one is starting, retry"
            ) from exc
        except CancelledError as exc:  # cancelled by close(): the server is stopping
            raise ScoringUnavailable("the server is stopping") from exc

    def _submit(self, function: Any, *args: Any) -> tuple[ProcessPoolExecutor, Future] | None:
        """The pool and the call's future; None if the pool was broken (it is replaced)."""
        pool = self._pool
        if pool is None:
            raise ScoringUnavailable("the scoring process is not running")
        try:
            return pool, pool.submit(function, *args)
        except BrokenProcessPool:
            self._replace(pool)
            return None
        except RuntimeError as exc:  # shut down by close(): the server is stopping
            raise ScoringUnavailable("the server is stopping") from exc

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_child,
            initargs=(self.torch_threads, os.getpid(), self.kept_models, self.prefix),
        )

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # closed, or another caller already replaced it
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()  # its child starts with the next call
            self.restarts += 1
        log.warning("the scoring process stopped; starting another (restart %d)", self.restarts)
        if self.on_restart is not None:
            self.on_restart()
