"""Scoring engines: ONNX Runtime scores as torch does, and falls back to torch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.detector import Detector
from model.engine import ONNX_ROWS, OnnxEngine, TorchEngine, make_engine
from model.errors import DataError
from model.network import LSTMVAE, UNROLL_MAX_STEPS, fixed_noise, unrolled_lstm


@pytest.fixture(scope="module")
def net() -> LSTMVAE:
    torch.manual_seed(0)
    return LSTMVAE(3, ModelConfig(window=8, hidden_size=16, latent_dim=4)).eval()


# one call, or calls of at most ONNX_ROWS decoder rows (windows x 5 samples), side by side
# on more than one thread
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("windows", [1, ONNX_ROWS // 5, 2 * ONNX_ROWS // 5 + 5])
def test_onnx_runtime_scores_as_torch_does(net, windows, threads):
    noise = fixed_noise(5, 4, seed=1)
    x = torch.randn(windows, 8, 3) * 2
    onnx, reference = OnnxEngine(net, noise, threads), TorchEngine(net, noise)
    (log_prob, kl), (expected, expected_kl) = onnx(x), reference(x)
    assert log_prob.shape == (windows, 8, 3) and kl.shape == (windows,)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-4, atol=1e-4)
    empty, empty_kl = onnx(x[:0])
    assert empty.shape == (0, 8, 3) and empty_kl.shape == (0,)


def test_a_window_scores_the_same_in_any_batch_and_on_any_thread_count(net):
    noise = fixed_noise(4, 4, seed=1)
    x = torch.randn(300, 8, 3) * 2
    one, two = OnnxEngine(net, noise, 1), OnnxEngine(net, noise, 2)
    whole = one(x)[0]
    assert torch.equal(two(x)[0], whole)
    for size in (1, 3, 20, 64):  # a window alone, with a few others, in calls of any size
        assert torch.equal(one(x[:size])[0], whole[:size])
        assert torch.equal(two(x[:size])[0], whole[:size])


@pytest.mark.parametrize("layers", [1, 2])
def test_the_unrolled_lstm_computes_what_the_module_does(layers):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, num_layers=layers, batch_first=True)
    h0, c0 = torch.randn(layers, 4, 7), torch.randn(layers, 4, 7)
    z, x = torch.randn(4, 5), torch.randn(4, 9, 5)
    with torch.no_grad():
        repeated, _ = lstm(z.unsqueeze(1).expand(4, 9, 5), (h0, c0))
        per_step, _ = lstm(x, (h0, c0))
        torch.testing.assert_close(unrolled_lstm(lstm, z, h0, c0, 9), repeated)
        torch.testing.assert_close(unrolled_lstm(lstm, x, h0, c0, 9), per_step)


@pytest.mark.parametrize(
    ("window", "layers"), [(8, 2), (UNROLL_MAX_STEPS + 1, 1)], ids=["two layers", "long window"]
)
def test_other_shapes_score_as_torch_does(window, layers):
    torch.manual_seed(0)
    config = ModelConfig(window=window, hidden_size=16, latent_dim=4, num_layers=layers)
    net = LSTMVAE(3, config).eval()
    noise, x = fixed_noise(3, 4, seed=1), torch.randn(40, window, 3) * 2
    log_prob, kl = OnnxEngine(net, noise, 1)(x)
    expected, expected_kl = TorchEngine(net, noise)(x)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-4, atol=1e-4)


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
    with_torch = Detector.load(tmp_path / "m.lvad", engine="torch")
    assert with_torch.engine.name == "torch"
    reference = with_torch.score(synthetic.test[:300])
    reference_windows = with_torch.score_windows(windows)
    np.testing.assert_allclose(onnx.score, reference.score, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(onnx_windows.score, reference_windows.score, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(onnx.is_anomaly, reference.is_anomaly)
