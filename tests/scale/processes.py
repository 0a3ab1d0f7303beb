"""What the scale-out test servers share: temporary directories and process checks."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

START_TIMEOUT = 60.0  # seconds: crash recovery after a SIGKILL included


class MissingServer(RuntimeError):
    """A server binary is not installed (tests/scale/install-servers.sh)."""


def server_directory(prefix: str, owner: str | None) -> Path:
    """A fresh temporary directory, owned by ``owner`` when given (we are root then)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        account = pwd.getpwnam(owner)
        os.chown(root, account.pw_uid, account.pw_gid)
    return root


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def exists(pid: int) -> bool:
    """The process exists, even as a zombie."""
    return Path(f"/proc/{pid}").exists()


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
