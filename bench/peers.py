"""Part 1 of `make bench`: our LSTM-VAE beside TSB-AD's own peer implementations.

Every (file, method) pair runs in a fresh subprocess, so time and peak memory
are that method's alone: TSB-AD's peers in the bench environment (package
``tsb-ad`` 1.5, numpy<2), our detector in the main one. The child trains on the
file's first ``tr_<T>`` rows (TSB-AD's protocol; its unsupervised methods see
the whole series, as in TSB-AD), scores every row, and writes the scores and
its timings; the parent computes VUS-PR for all of them with the same code
(``model.evaluation.metrics``, TSB-AD's metric) and the sliding window of the file.

    python bench/peers.py --peer-python var/bench-venv/bin/python --out var/bench/peers
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from procstat import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tsbad-m"
FILE_PATTERN = re.compile(r"^\d+_(?P<dataset>[^_]+)_id_\d+_.*_tr_(?P<train>\d+)_1st_\d+\.csv$")
# TSB-AD's peers: name -> (wrapper kind, class to time as "fit" / "score" phases)
PEERS = {
    "OmniAnomaly": ("semi", "TSB_AD.models.OmniAnomaly:OmniAnomaly"),
    "USAD": ("semi", "TSB_AD.models.USAD:USAD"),
    "LSTMAD": ("semi", "TSB_AD.models.LSTMAD:LSTMAD"),
    "Donut": ("semi", "TSB_AD.models.Donut:Donut"),
    "AutoEncoder": ("semi", "TSB_AD.models.AE:AutoEncoder"),
    "PCA": ("unsup", "TSB_AD.models.PCA:PCA"),
    "KMeansAD": ("unsup", "TSB_AD.models.KMeansAD:KMeansAD"),
}
# ours: name -> model parameters on top of the defaults. "lvad" is the shipped default
# configuration; add a variant here (e.g. "lvad L=10": {"mc_samples": 10}) to compare it
OURS: dict[str, dict] = {"lvad": {}}
# default subset: the smallest files of each data set (whole run under 20 minutes on 2 cores)
DEFAULT_PER_SET = {"MSL": 2, "SMAP": 1, "SMD": 1}
# Donut scores with 1,024 Monte-Carlo samples per window (about 0.1 s per row on one
# core): by default it runs only on files up to this many rows; --no-row-caps lifts it
ROW_CAPS = {"Donut": 1500}
TIMEOUT_S = 1800


def rows_of(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def default_files(directory: Path, per_set: dict[str, int]) -> list[Path]:
    """The ``per_set[name]`` smallest files of each data set."""
    by_set: dict[str, list[Path]] = {}
    for path in sorted(directory.glob("*.csv"), key=rows_of):
        match = FILE_PATTERN.match(path.name)
        if match and len(by_set.setdefault(match["dataset"], [])) < per_set.get(
            match["dataset"], 0
        ):
            by_set[match["dataset"]].append(path)
    return [path for name in per_set for path in by_set.get(name, [])]


# ------------------------------------------------------------------ child side
class PhaseTimer:
    """Wraps methods of a class so the outermost call of each is timed by phase."""

    def __init__(self) -> None:
        self.seconds = {"fit": 0.0, "score": 0.0}
        self.active = False

    def wrap(self, cls: type, method: str, phase: str) -> None:
        original = getattr(cls, method)

        def timed(obj, *args, **kwargs):
            if self.active:
                return original(obj, *args, **kwargs)
            self.active, started = True, time.perf_counter()
            try:
                return original(obj, *args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
                self.active = False

        setattr(cls, method, timed)


def run_peer(method: str, data: np.ndarray, n_train: int) -> tuple[np.ndarray, dict[str, float]]:
    import importlib
    import random

    import torch
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict
    from TSB_AD.model_wrapper import run_Semisupervise_AD, run_Unsupervise_AD

    kind, target = PEERS[method]
    module, name = target.split(":")
    timer = PhaseTimer()
    cls = getattr(importlib.import_module(module), name)
    for attr, phase in (("fit", "fit"), ("fit_predict", "fit"), ("decision_function", "score")):
        if hasattr(cls, attr):
            timer.wrap(cls, attr, phase)
    random.seed(2024)  # as TSB-AD's own runner
    np.random.seed(2024)
    torch.manual_seed(2024)
    params = Optimal_Multi_algo_HP_dict[method]
    if kind == "semi":
        score = run_Semisupervise_AD(method, data[:n_train], data, **params)
    else:
        score = run_Unsupervise_AD(method, data, **params)
    if isinstance(score, str):  # TSB-AD's wrapper returns its error message
        raise RuntimeError(f"{method}: {score}")
    return np.asarray(score, dtype=float).ravel(), timer.seconds


def run_ours(method: str, path: Path, n_train: int) -> tuple[np.ndarray, dict[str, float]]:
    sys.path.insert(0, str(ROOT))
    from app.ops.malloc import reuse_freed_buffers
    from model.config import ModelConfig
    from model.data import prepare_frame, read_frame
    from model.detector import Detector

    reuse_freed_buffers()  # as `lvad` runs it (app/ops/malloc.py)
    table = prepare_frame(read_frame(path), ignore_columns=["Label"])
    config = ModelConfig().replace(**OURS[method])
    started = time.perf_counter()
    detector = Detector.fit(table.values[:n_train], config)
    trained = time.perf_counter()
    score = detector.score(table.values).score
    return score, {"fit": trained - started, "score": time.perf_counter() - trained}


def child(method: str, path: Path, out: Path, threads: int) -> None:
    import torch
    import torch._dynamo  # noqa: F401  torch's optimizers import it on first use (2-7 s
    # here): a one-time process cost, kept out of every method's timings alike

    torch.set_num_threads(threads)
    n_train = int(FILE_PATTERN.match(path.name)["train"])
    started = time.perf_counter()
    if method in OURS:
        score, phases = run_ours(method, path, n_train)
    else:
        frame = pd.read_csv(path).dropna()  # TSB-AD's reading
        data = frame.iloc[:, :-1].to_numpy(dtype=float)
        score, phases = run_peer(method, data, n_train)
    total = time.perf_counter() - started
    np.save(out.with_suffix(".npy"), score)
    out.with_suffix(".json").write_text(
        json.dumps({**phases, "total": total, "peak_rss_mib": peak_rss_mib(), "rows": len(score)})
    )


# ------------------------------------------------------------------ parent side
def thread_env(threads: int) -> dict[str, str]:
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
    return {**os.environ, **dict.fromkeys(names, str(threads)), "TQDM_DISABLE": "1"}


def measure(method: str, path: Path, python: str, out_dir: Path, threads: int) -> dict:
    """Run one method on one file in a subprocess; returns its timings, memory and scores."""
    stem = out_dir / f"{path.stem}__{method.replace(' ', '_').replace('=', '')}"
    args = [python, __file__, "--child", method, "--file", str(path), "--threads", str(threads)]
    with open(stem.with_suffix(".log"), "w") as log:
        done = subprocess.run(
            [*args, "--out", str(stem)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=thread_env(threads),
            timeout=TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0 or not stem.with_suffix(".json").is_file():
        tail = stem.with_suffix(".log").read_text()[-400:]
        raise RuntimeError(f"{method} on {path.name} failed ({done.returncode}): {tail}")
    return {
        **json.loads(stem.with_suffix(".json").read_text()),
        "values": np.load(stem.with_suffix(".npy")),
    }


def describe(vus: float, result: dict) -> str:
    return (
        f"VUS-PR {vus:.3f}  train {result['fit']:7.1f} s  score {result['score']:6.1f} s  "
        f"peak {result['peak_rss_mib']:6.0f} MiB"
    )


def run_peers(
    files: list[Path],
    methods: list[str],
    python: str,
    out_dir: Path,
    threads: int,
    row_caps: dict[str, int],
) -> pd.DataFrame:
    """One row per (file, method): VUS-PR, training / scoring / total seconds, peak RSS."""
    sys.path.insert(0, str(ROOT))
    from model.evaluation.metrics import detection_metrics, sliding_window_for

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        frame = pd.read_csv(path)
        labels = frame["Label"].to_numpy().astype(int)
        window = sliding_window_for(frame.iloc[:, 0].to_numpy(dtype=float))
        for method in methods:
            if len(labels) > row_caps.get(method, len(labels)):
                continue
            exe = sys.executable if method in OURS else python
            try:
                result = measure(method, path, exe, out_dir, threads)
                vus = detection_metrics(result.pop("values")[: len(labels)], labels, window)[
                    "VUS-PR"
                ]
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  {method}: FAILED {exc}", flush=True)
                continue
            rows.append(
                {
                    "file": path.name,
                    "dataset": FILE_PATTERN.match(path.name)["dataset"],
                    "method": method,
                    "vus_pr": vus,
                    **result,
                }
            )
            print(f"{path.name[:24]:24s} {method:16s} {describe(vus, result)}", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "peers.csv", index=False)
    return table


def summarize(table: pd.DataFrame, ours: str) -> pd.DataFrame:
    """Per method: mean VUS-PR, training / scoring seconds, peak RSS, and ``ours`` / method.

    Ratios use only the files both ran; time is training plus scoring (data loading
    and process start left out), memory the largest peak over those files.
    """
    table = table.assign(seconds=table["fit"] + table["score"])
    mine = table[table["method"] == ours].set_index("file")
    rows = []
    for method, group in table.groupby("method", sort=False):
        group = group.set_index("file")
        common = group.index.intersection(mine.index)
        rows.append(
            {
                "method": method,
                "files": len(group),
                "VUS-PR": group["vus_pr"].mean(),
                "train s": group["fit"].sum(),
                "score s": group["score"].sum(),
                "peak RSS MiB": group["peak_rss_mib"].max(),
                f"VUS-PR {ours}/it": mine.loc[common, "vus_pr"].mean()
                / group.loc[common, "vus_pr"].mean(),
                f"time {ours}/it": mine.loc[common, "seconds"].sum()
                / group.loc[common, "seconds"].sum(),
                f"RSS {ours}/it": mine.loc[common, "peak_rss_mib"].max()
                / group.loc[common, "peak_rss_mib"].max(),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "peers")
    parser.add_argument(
        "--peer-python", default=str(ROOT / "var" / "bench-venv" / "bin" / "python")
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--files", nargs="*", help="file names (default: a few per data set)")
    parser.add_argument("--methods", nargs="*", default=[*OURS, *PEERS])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per method")
    parser.add_argument("--no-row-caps", action="store_true", help=f"ignore {ROW_CAPS}")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file, args.out, args.threads)
        return
    files = (
        [args.data / f for f in args.files]
        if args.files
        else default_files(args.data, DEFAULT_PER_SET)
    )
    caps = {} if args.no_row_caps else ROW_CAPS
    table = run_peers(files, args.methods, args.peer_python, args.out, args.threads, caps)
    print(summarize(table, next(iter(OURS))).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
