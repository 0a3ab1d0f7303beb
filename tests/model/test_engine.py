"""Scoring engines: ONNX Runtime scores as torch does, and falls back to torch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.detector import Detector
from model.engine import ONNX_WINDOWS, OnnxEngine, TorchEngine, make_engine
from model.errors import DataError
from model.network import LSTMVAE
from model.scoring import fixed_noise


@pytest.fixture(scope="module")
def net() -> LSTMVAE:
    torch.manual_seed(0)
    return LSTMVAE(3, ModelConfig(window=8, hidden_size=16, latent_dim=4)).eval()


@pytest.mark.parametrize("windows", [1, ONNX_WINDOWS, 2 * ONNX_WINDOWS + 5])
def test_onnx_runtime_scores_as_torch_does(net, windows):
    noise = fixed_noise(5, 4, seed=1)
    x = torch.randn(windows, 8, 3) * 2
    onnx, reference = OnnxEngine(net, noise, threads=1), TorchEngine(net, noise)
    (log_prob, kl), (expected, expected_kl) = onnx(x), reference(x)
    assert log_prob.shape == (windows, 8, 3) and kl.shape == (windows,)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-4, atol=1e-4)
    empty, empty_kl = onnx(x[:0])
    assert empty.shape == (0, 8, 3) and empty_kl.shape == (0,)


def test_make_engine_names_and_fallback(net, monkeypatch, caplog):
    noise = fixed_noise(2, 4, seed=1)
    assert make_engine(net, noise).name == "onnxruntime"
    assert make_engine(net, noise, "torch").name == "torch"
    with pytest.raises(DataError, match="unknown scoring engine 'tvm'"):
        make_engine(net, noise, "tvm")

    def broken(*args, **kwargs):
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with caplog.at_level(logging.WARNING, logger="model.engine"):
        engine = make_engine(net, noise)
    assert engine.name == "torch"
    assert "exporter unavailable" in caplog.text


def test_models_loaded_at_once_all_get_onnx_runtime(net):
    from concurrent.futures import ThreadPoolExecutor

    noise = fixed_noise(2, 4, seed=1)
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda _: make_engine(net, noise).name, range(4)))
    assert names == ["onnxruntime"] * 4


def test_a_detector_scores_alike_with_either_engine(detector, synthetic, tmp_path):
    assert detector.engine.name == "onnxruntime"
    assert Detector.load(detector.save(tmp_path / "m.lvad")).engine.name == "onnxruntime"
    onnx = detector.score(synthetic.test[:300])
    windows = np.stack([synthetic.test[i : i + detector.window] for i in (0, 190)])
    onnx_windows = detector.score_windows(windows)
    try:
        detector.use_engine("torch")
        reference = detector.score(synthetic.test[:300])
        reference_windows = detector.score_windows(windows)
    finally:
        detector.use_engine("onnxruntime")
    np.testing.assert_allclose(onnx.score, reference.score, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(onnx_windows.score, reference_windows.score, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(onnx.is_anomaly, reference.is_anomaly)
