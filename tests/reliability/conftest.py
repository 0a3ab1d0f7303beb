"""The reliability tier uses the app tier's servers: in-process apps and real `lvad serve`."""

from tests.app.conftest import app_settings, client, data_dir, launch, store

__all__ = ["app_settings", "client", "data_dir", "launch", "store"]
