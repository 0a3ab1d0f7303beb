"""Scoring engines: the model call behind every score.

An engine maps windows x (N, T, D), normalized, to log p(x_t|z) per step and
variable (the mean over the L posterior samples) and the KL divergence per
window, exactly ``reconstruction_log_prob``:

- ``onnxruntime`` (the default): when a detector is built, the scoring graph
  (encoder, the L posterior samples, decoder, Gaussian log-density) is exported
  into memory with torch's ONNX exporter, the decoder's LSTM written out as
  explicit steps (``model.network.unrolled_lstm``), and run by ONNX Runtime on
  one thread per call: with more threads, a batch is cut into calls that run
  side by side. More windows/s than torch at every batch size (docs/benchmarks.md),
  equal to torch's to ~1e-5 nats, and exactly the same for a window whatever the
  thread count or the batch it comes in. Nothing is written to or read from disk:
  the artifact stays the safetensors weights.
- ``torch``: the network as it is (the reference, and the fallback when the
  export fails: a warning says so).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from torch import nn

from model.errors import DataError
from model.network import LSTMVAE, kl_divergence, posterior_log_prob, reconstruction_log_prob

log = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "torch")
DEFAULT_ENGINE = "onnxruntime"
# Decoder rows (windows x L samples) per ONNX Runtime call: with the decoder's steps
# unrolled, 1,024 rows per call scored more windows/s than 512 or 2,048 (its
# per-operator overhead against the cache) at L = 1 to 10.
ONNX_ROWS = 1024
# torch's exporter keeps process-wide state: two exports at once fail (models loaded
# concurrently, e.g. an activation beside a job's), so they take turns
_EXPORT_LOCK = threading.Lock()


class Engine(Protocol):
    name: str
    window: int

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchEngine:
    name = "torch"

    def __init__(self, net: LSTMVAE, noise: torch.Tensor) -> None:
        self.net, self.noise, self.window = net, noise, net.window

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return reconstruction_log_prob(self.net, x, self.noise)


class ScoringGraph(nn.Module):
    """``reconstruction_log_prob`` as one traceable module, for the export: all windows
    decoded at once, the decoder as explicit steps (``LSTMVAE.decode(unroll=True)``)."""

    def __init__(self, net: LSTMVAE, noise: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("noise", noise.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net.encode(x)  # (N, Z)
        log_prob = posterior_log_prob(self.net, x, mu, logvar, self.noise, unroll=True)
        return log_prob, kl_divergence(mu, logvar).sum(dim=-1)


class OnnxEngine:
    name = "onnxruntime"

    def __init__(self, net: LSTMVAE, noise: torch.Tensor, threads: int) -> None:
        import onnxruntime

        self.window, self.threads = net.window, max(1, threads)
        self.windows_per_call = max(1, ONNX_ROWS // len(noise))
        graph = ScoringGraph(net, noise).eval()
        example = torch.zeros(2, net.window, net.n_features)
        buffer = io.BytesIO()
        with _EXPORT_LOCK, warnings.catch_warnings():  # tracer notes on the LSTM and the API
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (example,),
                buffer,
                dynamo=False,
                input_names=["x"],
                output_names=["log_prob", "kl"],
                dynamic_axes={"x": {0: "windows"}},
                opset_version=17,
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # more threads run whole calls side by side
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )
        # threads start with the first call that needs them
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnxruntime")

    def _run(self, windows: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"x": windows})

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        # calls of at most windows_per_call windows, as many per thread, of equal size;
        # each window's result is the same in any call (rows are computed independently)
        calls = max(1, -(-len(windows) // self.windows_per_call))
        calls = -(-calls // self.threads) * self.threads
        step = max(1, -(-len(windows) // calls))
        chunks = [windows[i : i + step] for i in range(0, len(windows), step)]
        if len(chunks) > 1 and self.threads > 1:
            parts = list(self.pool.map(self._run, chunks))
        else:
            parts = [self._run(chunk) for chunk in chunks]
        if not parts:
            return torch.zeros(x.shape), torch.zeros(x.shape[0])
        log_prob = np.concatenate([p[0] for p in parts])
        kl = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(log_prob), torch.from_numpy(kl)


def make_engine(net: LSTMVAE, noise: torch.Tensor, name: str = DEFAULT_ENGINE) -> Engine:
    """The named engine for ``net``; ``onnxruntime`` falls back to ``torch`` with a
    warning if the export or ONNX Runtime fails."""
    if name not in ENGINES:
        raise DataError(f"unknown scoring engine {name!r}: one of {', '.join(ENGINES)}")
    if name == "onnxruntime":
        try:
            return OnnxEngine(net, noise, torch.get_num_threads())
        except Exception as exc:  # any export or runtime failure: torch still scores
            log.warning("ONNX Runtime scoring unavailable (%s); scoring with torch", exc)
    return TorchEngine(net, noise)
