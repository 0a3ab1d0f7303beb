"""One process per model store: an exclusive ``flock`` on ``<store>/lock``.

Two servers on one store would each think they own its jobs and files (one marks
the other's running job failed, they serve different versions), so the store is
locked for as long as it is open, as Prometheus locks its data directory. The lock
belongs to the open file: it goes with the process, even a killed one, and the
"spawn" children (training, scoring) do not inherit it. The file holds the owner's
process id, for the message a second process gets.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from model.errors import LvadError

LOCK_NAME = "lock"


class StoreInUse(LvadError):
    """Another process has the model store open."""

    status_code = 503
    code = "store_in_use"


class StoreLock:
    """The exclusive lock on one store directory; ``release`` (or process exit) frees it."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_owner(self._fd)
            self.release()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise StoreInUse(
                f"the model store {root} is in use by another lvad process{owner}; "
                "stop it first, or give this one its own LVAD_STORE"
            ) from exc
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None


def _read_owner(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
