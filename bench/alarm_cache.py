"""Trained models and their per-step results, cached so that scoring variants do not retrain.

For every TSB-AD file (and NAB file, scored causally) a model is trained with the
given configuration on the file's training part and saved as
``<cache>/<name>.lvad``; its unsmoothed per-step results are saved beside it as
``<name>.npz``:

- ``val_log_prob`` (n_val, D), ``val_kl`` (n_val,): the validation tail as
  ``Detector.fit`` scores it to fit the threshold; ``val_last_log_prob``,
  ``val_last_kl``: the same scored causally (the last step of each window);
- ``log_prob`` (n, D), ``kl`` (n,): every row of the file (TSB-AD: the mean over the
  covering windows; NAB: the last step of the window ending there, NaN before);
- ``labels`` (n,), ``n_train``, ``slide`` (the VUS sliding window).

On load, ``floored_log_prob`` is ``log_prob`` with the level floor of two-valued
variables and the learned levels of one-valued ones (``model/levels.py``; the floor
fitted on the training part, as ``Detector.fit`` does, the levels learned along the rows):
what the ranking score is formed from (the alarm goes without it); ``period``, the
training part's period (``model/season.py``), as ``Detector.fit`` finds it; ``values``,
the normalized rows.

``--train-rows N`` trains on the first N rows instead of the file's training part
(the held-out-like case: a short history, a long stream); give it its own cache.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.cli import build_config
from model.config import ModelConfig
from model.data import prepare_frame, read_frame
from model.detector import Detector, split_point
from model.evaluation.evaluate import FILE_PATTERN, LABEL_COLUMN, tsbad_files
from model.evaluation.metrics import sliding_window_for
from model.evaluation.nab import PROBATION, nab_labels
from model.levels import LevelFloor
from model.scoring import score_last_points, score_series
from model.season import detect_period


@dataclass
class Case:
    name: str
    dataset: str
    detector: Detector
    n_train: int
    labels: np.ndarray  # (n,)
    slide: int  # VUS sliding window
    val_log_prob: np.ndarray  # (n_val, D) unsmoothed
    val_kl: np.ndarray  # (n_val,)
    val_last_log_prob: np.ndarray  # (n_val, D) causal
    val_last_kl: np.ndarray  # (n_val,)
    log_prob: np.ndarray  # (n, D) unsmoothed
    kl: np.ndarray  # (n,)
    causal: bool
    levels: np.ndarray  # (D,) distinct values of each variable in the training part
    floored_log_prob: np.ndarray  # (n, D) log_prob with the level floor: the ranking's
    floor: LevelFloor  # fitted on the training part
    validation_values: np.ndarray  # (n_val, D) normalized, the rows of val_log_prob
    period: int  # of the training part (0: none), as Detector.fit finds it
    values: np.ndarray  # (n, D) normalized, every row

    @property
    def window(self) -> int:
        return self.detector.window


def validation_raw(
    detector: Detector, train: np.ndarray, causal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The validation tail's unsmoothed results, as ``Detector.fit`` computes them (or
    the last step of each window, ``causal``)."""
    cut, window = split_point(len(train), detector.config), detector.window
    score = score_last_points if causal else score_series
    raw = score(detector.engine, detector.normalize(train[cut - window + 1 :]))
    return raw.log_prob[window - 1 :], raw.kl[window - 1 :]


def build_case(
    name: str,
    dataset: str,
    values: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    cache: Path,
    config: ModelConfig,
    causal: bool,
) -> Case:
    model, arrays = cache / f"{name}.lvad", cache / f"{name}.npz"
    if model.exists():
        detector = Detector.load(model)
    else:
        torch.manual_seed(config.seed)
        detector = Detector.fit(values[:n_train], config)
        detector.save(model)
    normalized = detector.normalize(values)
    if not arrays.exists():
        score = score_last_points if causal else score_series
        raw = score(detector.engine, normalized)
        val_log_prob, val_kl = validation_raw(detector, values[:n_train])
        np.savez(
            arrays,
            val_log_prob=val_log_prob,
            val_kl=val_kl,
            log_prob=raw.log_prob,
            kl=raw.kl,
            labels=labels,
            n_train=n_train,
            slide=sliding_window_for(values[:, 0]),
        )
    data = dict(np.load(arrays))
    if "val_last_log_prob" not in data:
        data["val_last_log_prob"], data["val_last_kl"] = validation_raw(
            detector, values[:n_train], causal=True
        )
        np.savez(arrays, **data)
    # as Detector.fit does (models cached before the floor have none of their own)
    floor = LevelFloor.fit(normalized[:n_train])
    return Case(
        name,
        dataset,
        detector,
        int(data["n_train"]),
        data["labels"],
        int(data["slide"]),
        data["val_log_prob"],
        data["val_kl"],
        data["val_last_log_prob"],
        data["val_last_kl"],
        data["log_prob"],
        data["kl"],
        causal,
        np.array([len(np.unique(column)) for column in values[:n_train].T]),
        floor.apply(data["log_prob"], normalized),
        floor,
        normalized[split_point(n_train, detector.config) : n_train],
        detect_period(normalized[:n_train], 2 * detector.window, detector.config.max_period),
        normalized,
    )


def tsbad_cases(
    directory: Path, cache: Path, config: ModelConfig, train_rows: int | None = None
) -> list[Case]:
    cache.mkdir(parents=True, exist_ok=True)
    cases = []
    for path in tsbad_files(directory):
        match = FILE_PATTERN.match(path.name)
        assert match is not None
        frame = read_frame(path)
        labels = frame[LABEL_COLUMN].to_numpy().astype(int)
        values = prepare_frame(frame, ignore_columns=[LABEL_COLUMN]).values
        n_train = train_rows or int(match["train"])
        name, dataset = path.stem, match["dataset"]
        cases.append(build_case(name, dataset, values, labels, n_train, cache, config, False))
        print(f"cached {name}", flush=True)
    return cases


def nab_cases(nab_dir: Path, cache: Path, config: ModelConfig) -> list[Case]:
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    cases = []
    for name in sorted(n for n, spans in windows.items() if spans):
        frame = read_frame(nab_dir / "data" / name)
        values = prepare_frame(frame, ignore_columns=["timestamp"]).values
        labels = nab_labels(frame, windows[name])
        n_train = int(len(values) * PROBATION)
        stem = name.replace("/", "__").removesuffix(".csv")
        (cache / "nab").mkdir(parents=True, exist_ok=True)
        cases.append(build_case(f"nab/{stem}", "NAB", values, labels, n_train, cache, config, True))
        print(f"cached {stem}", flush=True)
    return cases


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick the cached cases: data, cache, training rows, config."""
    parser.add_argument("directory", type=Path, nargs="?")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--nab", type=Path)
    parser.add_argument("--train-rows", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")


def load_cases(args: argparse.Namespace) -> list[Case]:
    """The cases ``add_case_arguments`` picked, trained first where not cached."""
    config = build_config(args)
    cases = []
    if args.directory:
        cases += tsbad_cases(args.directory, args.cache, config, args.train_rows)
    if args.nab:
        cases += nab_cases(args.nab, args.cache, config)
    return cases
