"""The server's heap after start-up and model swaps (``app.components.settle_heap``)."""

from __future__ import annotations

import gc
import shutil
import weakref

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.main import create_app
from app.registry.registry import Registry
from tests.app.conftest import AUTH


def test_start_up_objects_are_frozen_and_a_replaced_model_is_freed(app_settings, model_file):
    copy = app_settings.store / "second.lvad"
    shutil.copy(model_file, copy)
    registry = Registry(app_settings.store)
    second = registry.register_version("default", copy, source="test").version
    registry.close()
    gc.unfreeze()
    app = create_app(app_settings, registry=CollectorRegistry())
    with TestClient(app) as client:
        # start-up left its objects where the collector's full passes no longer walk them
        assert gc.get_freeze_count() > 10_000
        first = app.state.components.models.get("default").detector
        first.cycle = [first]  # freed by the collector only, not by reference counts
        gone = weakref.ref(first)
        del first
        path = f"/v1/models/default/versions/{second}/activate"
        assert client.post(path, headers=AUTH).status_code == 200
        # the swap thawed and collected before freezing again: the replaced model is
        # freed, not kept frozen for good
        assert gone() is None
        assert gc.get_freeze_count() > 10_000
