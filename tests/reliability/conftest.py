"""The reliability tier uses the app tier's servers: in-process apps and real `lvad serve`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.app.conftest import API_KEY, app_settings, client, data_dir, launch, store
from tests.app.live import LiveServer

__all__ = ["app_settings", "client", "data_dir", "launch", "serve_store", "store"]


@contextlib.contextmanager
def serve_store(root: Path, **env: str) -> Iterator[LiveServer]:
    """A ready server on the (seeded) ``root/store`` with ``root/data`` as its data
    directory, the test key, no bootstrap, and ``env``; stopped when the block ends."""
    (root / "data").mkdir(exist_ok=True)
    environment = {
        "LVAD_API_KEY": API_KEY,
        "LVAD_BOOTSTRAP_DEMO": "false",
        "LVAD_DATA_DIR": str(root / "data"),
        **env,
    }
    with LiveServer.serving(root / "store", root / "server.log", environment) as live:
        yield live
