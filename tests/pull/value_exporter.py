"""A small Prometheus exporter whose values the tests control (tests/pull/signals.py).

    python -m tests.pull.value_exporter PORT CONTROL_FILE

Serves ``demo_load`` and ``demo_latency`` for the hosts of ``signals.HOSTS`` on
127.0.0.1:PORT/metrics; at each scrape it reads CONTROL_FILE (JSON, may be absent):
``{"HOST": {"METRIC": offset}}`` adds offsets, ``{"absent": ["HOST/METRIC"]}`` leaves
series out, ``{"extra_hosts": ["c"]}`` serves more hosts.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tests.pull.signals import HOSTS, METRICS, signal_values


class ControlledCollector(Collector):
    def __init__(self, control: Path) -> None:
        self.control = control

    def read_control(self) -> dict:
        try:
            return json.loads(self.control.read_text())
        except (OSError, ValueError):
            return {}

    def collect(self):
        control, now = self.read_control(), time.time()
        absent = set(control.get("absent", []))
        for metric in METRICS:
            family = GaugeMetricFamily(metric, f"test signal {metric}", labels=["host"])
            for host in (*HOSTS, *control.get("extra_hosts", [])):
                if f"{host}/{metric}" in absent:
                    continue
                offset = float(control.get(host, {}).get(metric, 0.0))
                family.add_metric([host], float(signal_values(metric, host, now)) + offset)
            yield family


def main() -> None:
    port, control = int(sys.argv[1]), Path(sys.argv[2])
    registry = CollectorRegistry()
    registry.register(ControlledCollector(control))
    start_http_server(port, "127.0.0.1", registry)
    threading.Event().wait()


if __name__ == "__main__":
    main()
