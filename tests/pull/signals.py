"""The metrics the test exporter serves, as functions of time: the same values in the
history written before Prometheus starts and in what it scrapes live.

Two hosts, two correlated variables: ``demo_load`` (a 60 s cycle) and ``demo_latency``
(follows the load). A value depends only on the whole second it is read in, the host
and the metric, so history and live scrapes agree; an offset from the control file
(``{"a": {"demo_latency": 80}}``) is added live: the injected anomaly.
"""

from __future__ import annotations

import numpy as np

HOSTS = ("a", "b")
METRICS = ("demo_load", "demo_latency")
PERIOD = 60.0  # seconds


def noise(t: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic noise in [-0.5, 0.5): the same for the same second and salt."""
    x = np.sin(np.asarray(t, dtype=np.float64) * 12.9898 + salt * 78.233) * 43758.5453
    return x - np.floor(x) - 0.5


def signal_values(metric: str, host: str, t: np.ndarray) -> np.ndarray:
    """Values of ``metric`` for ``host`` at Unix seconds ``t`` (whole seconds count)."""
    t = np.floor(np.asarray(t, dtype=np.float64))
    phase = 0.0 if host == HOSTS[0] else 1.3
    salt = HOSTS.index(host) if host in HOSTS else 7.0
    load = 10.0 + 3.0 * np.sin(2 * np.pi * t / PERIOD + phase) + 0.4 * noise(t, salt)
    if metric == "demo_load":
        return load
    return 50.0 + 5.0 * load + 2.0 * noise(t, salt + 0.5)


def openmetrics_history(start: int, end: int, target: dict[str, str]) -> str:
    """Every series from ``start`` to ``end`` (Unix seconds, every second) as OpenMetrics
    text, for ``promtool tsdb create-blocks-from openmetrics``; ``target``: the labels
    Prometheus gives the live series (``job``, ``instance``), so history and live
    samples are one series."""
    extra = "".join(f',{k}="{v}"' for k, v in sorted(target.items()))
    t = np.arange(start, end + 1)
    lines = []
    for metric in METRICS:
        lines.append(f"# TYPE {metric} gauge")
        for host in HOSTS:
            values = signal_values(metric, host, t)
            lines += [
                f'{metric}{{host="{host}"{extra}}} {v:.6f} {s}'
                for s, v in zip(t, values, strict=True)
            ]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
