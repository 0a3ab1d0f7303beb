"""A real app (lifespan, store, job runner) around the session's tiny model."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.main import create_app
from app.settings import Settings
from app.store import Store

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def seeded_store(root, model_file) -> None:
    """A store whose version 1 (active) is the session's tiny model."""
    store = Store(root)
    copy = root / "incoming.lvad"
    shutil.copy(model_file, copy)
    record = store.register_model(copy, source="test")
    store.set_active(record.version)
    store.close()


def make_settings(tmp_path, **overrides) -> Settings:
    values = {
        "store": tmp_path / "store",
        "api_key": API_KEY,
        "bootstrap_demo": False,
        "data_dir": tmp_path / "data",
        **overrides,
    }
    (tmp_path / "data").mkdir(exist_ok=True)
    return Settings(**values)


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
