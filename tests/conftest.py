"""Shared fixtures: a tiny detector trained once per test session on synthetic data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.detector import Detector

torch.set_num_threads(1)

FEATURES = ["alpha", "beta", "gamma", "delta"]


def missing_component(message: str) -> NoReturn:
    """A real component a test needs is not here: skip the test, or fail it under
    CI=true, where .ci/run installs every component."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


TINY = ModelConfig(window=16, hidden_size=24, latent_dim=4, epochs=8, batch_size=64, seed=3)


@dataclass(frozen=True)
class Synthetic:
    train: np.ndarray  # (n, D) normal behaviour
    test: np.ndarray  # (m, D) with injected anomalies
    labels: np.ndarray  # (m,) 1 on injected rows
    injected: dict[str, tuple[int, int, int]]  # kind -> (start, end, variable index)


def make_synthetic(seed: int = 0, n_train: int = 1200, n_test: int = 600) -> Synthetic:
    """Correlated seasonal signals; the test part has a spike and a level shift."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_train + n_test)
    base = np.sin(2 * np.pi * t / 40)
    values = np.stack(
        [
            base + 0.1 * rng.standard_normal(len(t)),
            np.cos(2 * np.pi * t / 40) + 0.1 * rng.standard_normal(len(t)),
            2.0 * base + 5.0 + 0.1 * rng.standard_normal(len(t)),
            100.0 + 10.0 * np.sin(2 * np.pi * t / 20) + rng.standard_normal(len(t)),
        ],
        axis=1,
    )
    train, test = values[:n_train].copy(), values[n_train:].copy()
    labels = np.zeros(n_test, dtype=int)
    injected = {"spike": (200, 204, 1), "shift": (400, 440, 3)}
    test[200:204, 1] += 2.5
    test[400:440, 3] += 30.0
    for start, end, _ in injected.values():
        labels[start:end] = 1
    return Synthetic(train, test, labels, injected)


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    return make_synthetic()


@pytest.fixture(scope="session")
def detector(synthetic: Synthetic) -> Detector:
    from model.data import prepare_array

    return Detector.fit(prepare_array(synthetic.train, FEATURES), TINY)


@pytest.fixture(scope="session")
def model_file(detector: Detector, tmp_path_factory: pytest.TempPathFactory):
    return detector.save(tmp_path_factory.mktemp("models") / "tiny.lvad")
