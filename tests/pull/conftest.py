"""Fixtures of the pull-mode tests: one Prometheus for tests/pull, with 40 minutes of
history of the controlled exporter's series written by promtool before it starts."""

from __future__ import annotations

import time

import pytest

from tests.docker.queries import PrometheusAPI
from tests.pull.processes import (
    PrometheusSetup,
    Service,
    require_binary,
    value_exporter,
    write_history,
)

HISTORY_SECONDS = 2400


@pytest.fixture(scope="package")
def pull_root(tmp_path_factory):
    return tmp_path_factory.mktemp("pull")


@pytest.fixture(scope="package")
def exporter(pull_root):
    """The controlled exporter, running; yields (service, control file)."""
    service, control = value_exporter(pull_root)
    service.start()
    yield service, control
    service.stop()


@pytest.fixture(scope="package")
def prometheus_setup(pull_root, exporter):
    binary = require_binary("prometheus", "prometheus")
    promtool = require_binary("promtool", "prometheus")
    root = pull_root / "prometheus"
    root.mkdir()
    now = int(time.time())
    target = exporter[0].url[len("http://") :]
    labels = {"job": "demo", "instance": target}
    write_history(promtool, root / "data", now - HISTORY_SECONDS, now - 2, labels)
    return PrometheusSetup(binary, root, {"demo": target}, history_end=now - 2)


@pytest.fixture(scope="package")
def prometheus(prometheus_setup) -> Service:
    """Prometheus scraping the controlled exporter every second; a test may stop and
    start it again (same port, same data)."""
    service = prometheus_setup.service()
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="package")
def prometheus_api(prometheus) -> PrometheusAPI:
    return PrometheusAPI(prometheus.url)
