"""A real app (lifespan, store, job runner) around the session's tiny model."""

from __future__ import annotations

import contextlib
import gc
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.main import create_app
from app.registry.registry import Registry
from app.settings import Settings
from tests.app.live import API_KEY, AUTH, LiveServer
from tests.conftest import FEATURES, make_synthetic

__all__ = ["API_KEY", "AUTH"]  # tests import the key from here


def seeded_store(root, model_file, name: str = "default") -> None:
    """A store whose model ``name`` has version 1 (active): the session's tiny model."""
    registry = Registry(root)
    copy = root / "incoming.lvad"
    shutil.copy(model_file, copy)
    record = registry.register_version(name, copy, source="test")
    registry.set_active(name, record.version)
    registry.close()


def make_settings(tmp_path, **overrides) -> Settings:
    values = {
        "store": tmp_path / "store",
        "api_key": API_KEY,
        "bootstrap_demo": False,
        "data_dir": tmp_path / "data",
        # each scoring child takes seconds to start; tests/app/test_scoring_process.py
        # covers it, and live servers (`lvad serve`) run with it
        "scoring_process": False,
        **overrides,
    }
    (tmp_path / "data").mkdir(exist_ok=True)
    return Settings(**values)


@pytest.fixture(autouse=True)
def thawed_heap() -> Iterator[None]:
    """A started app freezes the heap (``settle_heap``); the next test starts thawed, so
    one test's cyclic garbage is collected in its own time."""
    yield
    gc.unfreeze()


@pytest.fixture
def app_settings(tmp_path, model_file) -> Settings:
    settings = make_settings(tmp_path)
    seeded_store(settings.store, model_file)
    return settings


@pytest.fixture
def client(app_settings):
    app = create_app(app_settings, registry=CollectorRegistry())
    with TestClient(app) as test_client:
        yield test_client


# ---------------------------------------------------------------------- live servers
@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """launch(store, **env) -> a started (not yet ready) server; all are stopped afterwards."""
    servers: list[LiveServer] = []

    def start(store: Path, **env: str) -> LiveServer:
        environment = {"LVAD_API_KEY": API_KEY, "LVAD_BOOTSTRAP_DEMO": "false", **env}
        log = tmp_path / f"server-{len(servers) + 1}.log"
        server = LiveServer.launch(store, log, environment)
        servers.append(server)
        return server

    yield start
    with contextlib.ExitStack() as stack:  # every server is stopped even if one stop fails
        for server in servers:
            stack.callback(server.stop, timeout=15)
    for server in servers:  # shown when the test failed
        print(f"--- {server.log_path.name} (exit {server.process.returncode}) ---")
        print(server.log_tail(60))


@pytest.fixture
def store(tmp_path: Path, model_file: Path) -> Path:
    """A store whose version 1 (active) is the session's tiny model."""
    root = tmp_path / "store"
    seeded_store(root, model_file)
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory (LVAD_DATA_DIR) with ``metrics.csv``: 3000 rows of the FEATURES."""
    root = tmp_path / "data"
    root.mkdir()
    values = make_synthetic(seed=1, n_train=3000, n_test=16).train  # (3000, 4)
    pd.DataFrame(values, columns=FEATURES).to_csv(root / "metrics.csv", index=False)
    return root
