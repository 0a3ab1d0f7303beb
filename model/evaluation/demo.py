"""A built-in, seeded demo data set: server metrics every ten minutes, with labelled anomalies.

The generative process runs once over train + test, so the test part continues the
train part in time. From a shared ``traffic`` driver (daily cycle peaking at 14:00,
weekends at 60 %, slow multiplicative AR(1) drift):

* ``net_in_mbps``  = 30 + 270 * traffic + AR noise
* ``net_out_mbps`` = 12 + 1.6 * net_in + noise                (follows net_in)
* ``cpu_util``     = 6 + 0.18 * net_in + AR noise, in 0..100 % (follows traffic)
* ``load_avg``     = 0.08 * cpu_util + noise (an 8-core host)  (follows cpu)
* ``latency_ms``   = 15 + 40 * (cpu_util / 100)^2 + noise      (follows cpu)
* ``mem_used_gb``  = 12 + 0.08 GB/day creep + 0.8 * traffic + noise

Anomalies are injected into the test part only, after its first 64 rows, one
non-overlapping event per slot. Each adds an offset to one root variable before its
dependents are computed, so e.g. a CPU level shift also raises load and latency;
an event's ``variables`` are the root and those dependents. Sizes are in units of
the root's local noise std (std of the series minus a 2-hour rolling mean, within a
day either side): spike +6..10 std for 1-3 steps; level shift +4..5 std for 3-6 h;
variance change +3 std of extra noise for 3-6 h; broken correlation: net_out held
near its level at the start (with noise) for 4-6 h while net_in keeps moving,
placed in the morning ramp where possible so the break is visible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from model.errors import DataError

DEMO_FEATURES = ["cpu_util", "load_avg", "mem_used_gb", "net_in_mbps", "net_out_mbps", "latency_ms"]
ANOMALY_KINDS = ("spike", "level_shift", "variance_change", "broken_correlation")
WARMUP_ROWS = 64  # no anomaly in the first rows of the test part

_START = pd.Timestamp("2024-01-01")  # a Monday
_EVENT_PLAN = ("spike", "level_shift", "variance_change", "broken_correlation", "spike")
_ROOTS = {
    "spike": ("cpu_util", "latency_ms", "net_in_mbps", "mem_used_gb"),
    "level_shift": ("cpu_util", "latency_ms"),
    "variance_change": ("cpu_util", "latency_ms"),
    "broken_correlation": ("net_out_mbps",),
}
_DEPENDENTS = {
    "net_in_mbps": ("net_out_mbps", "cpu_util", "load_avg", "latency_ms"),
    "cpu_util": ("load_avg", "latency_ms"),
}
_DURATION_HOURS = {"level_shift": (3, 6), "variance_change": (3, 6), "broken_correlation": (4, 6)}
_DECIMALS = {"cpu_util": 2, "load_avg": 3, "mem_used_gb": 3, "latency_ms": 2}


@dataclass(frozen=True)
class DemoData:
    train: pd.DataFrame  # timestamp + DEMO_FEATURES; normal behaviour only
    test: pd.DataFrame  # timestamp + DEMO_FEATURES + label (0/1)
    events: list[dict]  # kind, start, end (test rows, end exclusive), variables, start_time


def make_demo(
    seed: int = 0, *, train_days: int = 21, test_days: int = 7, step_minutes: int = 10
) -> DemoData:
    """Generate the demo data; the same arguments always give identical frames."""
    if train_days < 1 or test_days < 1 or not 1 <= step_minutes <= 360:
        raise DataError("make_demo needs train_days >= 1, test_days >= 1, 1 <= step_minutes <= 360")
    per_day = 24 * 60 / step_minutes
    n_train, n_test = round(train_days * per_day), round(test_days * per_day)
    stamps = pd.date_range(_START, periods=n_train + n_test, freq=f"{step_minutes}min")
    noise_seed, event_seed = np.random.SeedSequence(seed).spawn(2)
    drivers = _drivers(stamps, np.random.default_rng(noise_seed))
    clean = _compose(drivers, {})
    event_rng = np.random.default_rng(event_seed)
    hours = stamps.hour.to_numpy()[n_train:]  # (n_test,)
    events = _plan_events(hours, step_minutes, event_rng)
    series = _compose(drivers, _offsets(events, clean, n_train, step_minutes, event_rng))
    frame = pd.DataFrame({"timestamp": stamps.as_unit("ns")})
    for name in DEMO_FEATURES:
        frame[name] = np.round(series[name], _DECIMALS.get(name, 2))
    train = frame.iloc[:n_train].reset_index(drop=True)
    test = frame.iloc[n_train:].reset_index(drop=True)
    test["label"] = _labels(events, n_test)
    for event in events:
        event["start_time"] = test["timestamp"].iloc[event["start"]].isoformat()
    return DemoData(train=train, test=test, events=events)


def write_demo(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write train.csv, test.csv and events.json into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = make_demo(seed)
    paths = {"train": out / "train.csv", "test": out / "test.csv", "events": out / "events.json"}
    demo.train.to_csv(paths["train"], index=False)
    demo.test.to_csv(paths["test"], index=False)
    paths["events"].write_text(json.dumps(demo.events, indent=2) + "\n", encoding="utf-8")
    return paths


# ---------------------------------------------------------------- normal behaviour


def _ar1(rng: np.random.Generator, n: int, phi: float, std: float) -> np.ndarray:
    """Stationary AR(1) noise with the given marginal std; (n,)."""
    shocks = rng.standard_normal(n) * std * np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], shocks)


def _drivers(stamps: pd.DatetimeIndex, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seasonal traffic, elapsed days and the per-variable noise; every array (n,)."""
    n = len(stamps)
    days = (stamps - stamps[0]).total_seconds().to_numpy() / 86_400
    hour = stamps.hour.to_numpy() + stamps.minute.to_numpy() / 60
    diurnal = 0.5 * (1 - np.cos(2 * np.pi * (hour - 2) / 24))  # 0 at 02:00, 1 at 14:00
    weekly = np.where(stamps.day_of_week.to_numpy() >= 5, 0.6, 1.0)
    traffic = (0.15 + 0.85 * diurnal) * weekly * np.exp(_ar1(rng, n, 0.98, 0.08))
    return {
        "days": days,
        "traffic": traffic,
        "net_in_mbps": _ar1(rng, n, 0.6, 8.0),
        "net_out_mbps": rng.normal(0, 6.0, n),
        "cpu_util": _ar1(rng, n, 0.7, 2.5),
        "load_avg": rng.normal(0, 0.12, n),
        "latency_ms": _ar1(rng, n, 0.3, 1.2),
        "mem_used_gb": _ar1(rng, n, 0.5, 0.06),
    }


def _compose(d: dict[str, np.ndarray], offsets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Build the metrics in causal order; ``offsets`` (per variable, (n,)) are added at each."""

    def noisy(name: str) -> np.ndarray:
        return d[name] + offsets.get(name, 0.0)

    net_in = np.clip(30 + 270 * d["traffic"] + noisy("net_in_mbps"), 0, None)
    cpu = np.clip(6 + 0.18 * net_in + noisy("cpu_util"), 0, 100)
    return {
        "cpu_util": cpu,
        "load_avg": np.clip(0.08 * cpu + noisy("load_avg"), 0, None),
        "mem_used_gb": 12 + 0.08 * d["days"] + 0.8 * d["traffic"] + noisy("mem_used_gb"),
        "net_in_mbps": net_in,
        "net_out_mbps": np.clip(12 + 1.6 * net_in + noisy("net_out_mbps"), 0, None),
        "latency_ms": np.clip(15 + 40 * (cpu / 100) ** 2 + noisy("latency_ms"), 1, None),
    }


# ---------------------------------------------------------------- anomalies


def _plan_events(hours: np.ndarray, step_minutes: int, rng: np.random.Generator) -> list[dict]:
    """Place one event per equal slot of the test rows after the warm-up; sorted by start."""
    kinds = list(_EVENT_PLAN)
    rng.shuffle(kinds)
    bounds = np.linspace(WARMUP_ROWS, len(hours), len(kinds) + 1).astype(int)
    margin = max(1, 60 // step_minutes)  # quiet rows kept between events
    events = []
    for kind, low, high in zip(kinds, bounds[:-1], bounds[1:], strict=True):
        length = _event_length(kind, step_minutes, rng)
        starts = np.arange(low + margin, high - margin - length + 1)
        if starts.size == 0:
            raise DataError("test_days is too short to hold every demo anomaly")
        if kind == "broken_correlation":  # the morning ramp makes the break visible
            ramp = starts[(hours[starts] >= 6) & (hours[starts] < 10)]
            starts = ramp if ramp.size else starts
        start = int(rng.choice(starts))
        root = str(rng.choice(_ROOTS[kind]))
        variables = [root, *_DEPENDENTS.get(root, ())]
        events.append({"kind": kind, "start": start, "end": start + length, "variables": variables})
    return events


def _event_length(kind: str, step_minutes: int, rng: np.random.Generator) -> int:
    if kind == "spike":
        return int(rng.integers(1, 4))
    low, high = _DURATION_HOURS[kind]
    return max(2, round(rng.uniform(low, high) * 60 / step_minutes))


def _offsets(
    events: list[dict],
    clean: dict[str, np.ndarray],
    n_train: int,
    step_minutes: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Per-variable additive offsets (n,) that realise the events on the full series."""
    n = len(clean["cpu_util"])
    offsets = {name: np.zeros(n) for name in DEMO_FEATURES}
    for event in events:
        root = event["variables"][0]
        rows = slice(n_train + event["start"], n_train + event["end"])
        length = rows.stop - rows.start
        scale = _local_std(clean[root], rows, per_hour=max(1, round(60 / step_minutes)))
        if event["kind"] == "spike":
            offsets[root][rows] += rng.uniform(6, 10) * scale
        elif event["kind"] == "level_shift":
            offsets[root][rows] += rng.uniform(4, 5) * scale
        elif event["kind"] == "variance_change":
            offsets[root][rows] += rng.normal(0, 3 * scale, length)
        else:  # broken_correlation: root ignores its parent, stays near its starting level
            held = clean[root][rows.start] + np.cumsum(rng.normal(0, 0.3 * scale, length))
            offsets[root][rows] += held + rng.normal(0, scale, length) - clean[root][rows]
    return offsets


def _local_std(values: np.ndarray, rows: slice, per_hour: int) -> float:
    """Noise-level std around ``rows``: series minus its 2-hour rolling mean, +-1 day."""
    rolling = pd.Series(values).rolling(2 * per_hour + 1, center=True, min_periods=1)
    smooth = rolling.mean().to_numpy()
    window = slice(max(0, rows.start - 24 * per_hour), rows.stop + 24 * per_hour)
    return float(np.std((values - smooth)[window]))


def _labels(events: list[dict], n_test: int) -> np.ndarray:
    labels = np.zeros(n_test, dtype=np.int64)  # (n_test,)
    for event in events:
        labels[event["start"] : event["end"]] = 1
    return labels
