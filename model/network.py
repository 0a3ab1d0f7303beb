"""The LSTM-VAE network and its training loss.

x (batch, T, D) --LSTM encoder--> q(z|x) = N(mu, diag sigma^2)
z (batch, Z)    --LSTM decoder--> p(x_t|z) = N(mean_t, diag std_t^2) for every step t

The decoder sees z at every step and starts from a hidden state computed from
z. The output std has a floor (``min_std``) so that log p(x|z) stays finite.
Torch runs both LSTMs with its fused kernel. The scoring engine exports the
decoder as explicit steps (``unrolled_lstm``, projecting z once per
window), which ONNX Runtime runs faster than its own LSTM kernel; the encoder,
whose input changes at every step, stays ONNX Runtime's LSTM, the faster there
(docs/benchmarks.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from model.config import ModelConfig

LOG_2PI = math.log(2.0 * math.pi)
# Longest window whose decoder is unrolled for the ONNX export: the export's time grows
# with the steps (seconds for a few hundred), so longer windows keep the LSTM operator,
# which loads at once and scores somewhat slower.
UNROLL_MAX_STEPS = 256


class LSTMVAE(nn.Module):
    def __init__(self, n_features: int, config: ModelConfig) -> None:
        super().__init__()
        h, z, layers = config.hidden_size, config.latent_dim, config.num_layers
        self.n_features = n_features
        self.window = config.window
        self.num_layers = layers
        self.min_std = config.min_std
        self.encoder = nn.LSTM(n_features, h, num_layers=layers, batch_first=True)
        self.to_posterior = nn.Linear(h, 2 * z)  # -> (mu, log sigma^2)
        self.to_initial_state = nn.Linear(z, 2 * layers * h)  # -> decoder (h0, c0)
        self.decoder = nn.LSTM(z, h, num_layers=layers, batch_first=True)
        self.to_output = nn.Linear(h, 2 * n_features)  # -> (mean, raw std)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h_n, _) = self.encoder(x)  # h_n: (layers, batch, H)
        mu, logvar = self.to_posterior(h_n[-1]).chunk(2, dim=-1)  # (batch, Z) each
        return mu, logvar.clamp(-12.0, 8.0)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None
    ) -> torch.Tensor:
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + eps * torch.exp(0.5 * logvar)

    def decode(
        self, z: torch.Tensor, steps: int, unroll: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (batch, Z) -> mean, std of p(x_t|z), each (batch, steps, D). ``unroll``: the
        LSTM as explicit steps (``unrolled_lstm``, for an ONNX export) up to
        ``UNROLL_MAX_STEPS`` steps; the same values."""
        batch = z.shape[0]
        state = torch.tanh(self.to_initial_state(z))  # (batch, 2 * layers * H)
        h0, c0 = state.view(batch, 2, self.num_layers, -1).permute(1, 2, 0, 3).contiguous()
        if unroll and steps <= UNROLL_MAX_STEPS:
            out = unrolled_lstm(self.decoder, z, h0, c0, steps)
        else:
            inputs = z.unsqueeze(1).expand(batch, steps, z.shape[-1])  # (batch, steps, Z)
            out, _ = self.decoder(inputs, (h0, c0))  # (batch, steps, H)
        mean, raw_std = self.to_output(out).chunk(2, dim=-1)  # (batch, steps, D) each
        return mean, softplus(raw_std) + self.min_std

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        mean, std = self.decode(z, x.shape[1])
        return mean, std, mu, logvar


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x). Exported to ONNX as Relu(x) + Log(1 + Exp(-|x|)), the same value to
    ~1e-6: ONNX Runtime's Softplus kernel is scalar (a large share of the scoring time
    with many variables), its Exp and Log are vectorized. torch's own kernel is the
    faster there."""
    if torch.onnx.is_in_onnx_export():
        return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))
    return F.softplus(x)


def unrolled_lstm(
    lstm: nn.LSTM, inputs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, steps: int
) -> torch.Tensor:
    """``lstm`` (batch_first) from the state (h0, c0) (layers, batch, H) over ``steps`` steps
    of ``inputs`` (batch, steps, In), or of one input (batch, In) repeated at every step:
    the last layer's outputs (batch, steps, H) as the module computes them, written as
    explicit steps for the ONNX export.

    Each layer's input projection W_ih x + b is one matrix product for all steps (once
    per sequence for a repeated input, as the decoder's z). Each step computes every
    gate with its own matrix product, which ONNX Runtime fuses with the gate's Sigmoid
    or Tanh; at hidden size 64 this scores more windows/s than its LSTM kernel
    (docs/benchmarks.md). One product for all four gates measured slower: splitting
    its output copies it.
    """
    if not lstm.bias or lstm.bidirectional or lstm.proj_size or lstm.dropout or steps < 1:
        raise ValueError("unrolled_lstm covers a one-way LSTM with biases and no dropout")
    hidden = lstm.hidden_size
    outputs = inputs
    for layer in range(lstm.num_layers):
        w_ih = getattr(lstm, f"weight_ih_l{layer}")
        w_hh = getattr(lstm, f"weight_hh_l{layer}").t()
        bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        projected = F.linear(outputs, w_ih, bias).split(hidden, dim=-1)  # 4 x (batch, [steps,] H)
        w_gate = w_hh.split(hidden, dim=-1)
        h, c = h0[layer], c0[layer]
        per_step = []
        for t in range(steps):
            i, f, g, o = (
                torch.addmm(p if p.dim() == 2 else p[:, t], h, w)
                for p, w in zip(projected, w_gate, strict=True)
            )
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            per_step.append(h)
        outputs = torch.stack(per_step, dim=1)
    return outputs


def lstm_flops(inputs: int, hidden: int, layers: int) -> int:
    """FLOPs of one LSTM step: 4 gates x (input + hidden) x hidden multiply-adds per layer."""
    return sum(2 * 4 * hidden * ((inputs if i == 0 else hidden) + hidden) for i in range(layers))


def flops_per_window(n_features: int, config: ModelConfig, samples: int) -> int:
    """FLOPs of the matrix products that score one window with ``samples`` posterior draws.

    Encoder once, posterior head once, then per sample the decoder's initial
    state, T decoder steps and the output head. Multiply-adds count 2; the gate
    nonlinearities and the Gaussian log-density (elementwise) are not counted.
    """
    h, z, layers, steps = config.hidden_size, config.latent_dim, config.num_layers, config.window
    encoder = steps * lstm_flops(n_features, h, layers) + 2 * h * 2 * z
    decoder = 2 * z * 2 * layers * h + steps * (lstm_flops(z, h, layers) + 2 * h * 2 * n_features)
    return encoder + samples * decoder


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, std^2), in nats."""
    return -0.5 * (LOG_2PI + 2.0 * torch.log(std) + ((x - mean) / std) ** 2)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per latent dimension: (batch, Z)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def elbo_loss(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    free_bits: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO per window, averaged over the batch; returns (loss, nll, kl).

    Posterior-collapse guard ("free bits", Kingma et al. 2016): the KL of each
    latent dimension, averaged over the batch, is only penalised above
    ``free_bits`` nats, so the encoder is not pushed to switch dimensions off.
    """
    nll = -gaussian_log_prob(x, mean, std).sum(dim=(1, 2)).mean()
    kl_per_dim = kl_divergence(mu, logvar).mean(dim=0)  # (Z,)
    kl = kl_per_dim.sum()
    penalised = torch.clamp(kl_per_dim, min=free_bits).sum()
    return nll + beta * penalised, nll, kl


# ---------------------------------------------------------------------- reconstruction probability
def fixed_noise(samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The L standard-normal draws shared by every window: (L, Z)."""
    return torch.randn(samples, latent_dim, generator=torch.Generator().manual_seed(seed))


# Posterior samples decoded per LSTM call (L x windows). The decoder's cost per sample
# rises once its state and outputs outgrow the cache: at batch 512 x L = 10, decoding
# 512-row chunks scores more windows per second than one 5,120-row call, and it
# bounds the memory of a large batch.
DECODE_ROWS = 512


def posterior_log_prob(
    net: LSTMVAE,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    noise: torch.Tensor,
    unroll: bool = False,
) -> torch.Tensor:
    """log p(x|z_l) of windows x (c, T, D), averaged over the L draws z_l = mu + sigma eps_l
    of their posteriors (mu, logvar: (c, Z); noise: (L, Z)), all decoded in one call
    (``unroll``: see ``LSTMVAE.decode``)."""
    samples, (c, steps, d) = noise.shape[0], x.shape
    z = mu.unsqueeze(0) + noise.unsqueeze(1) * torch.exp(0.5 * logvar).unsqueeze(0)  # (L, c, Z)
    mean, std = net.decode(z.reshape(samples * c, -1), steps, unroll)  # (L*c, T, D)
    shape = (samples, c, steps, d)
    return gaussian_log_prob(x.unsqueeze(0), mean.view(shape), std.view(shape)).mean(dim=0)


@torch.inference_mode()
def reconstruction_log_prob(
    net: LSTMVAE, x: torch.Tensor, noise: torch.Tensor, decode_rows: int = DECODE_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, T, D) -> (log_prob (N, T, D) averaged over the L draws, kl (N,)).

    The encoder sees the whole batch at once; the L posterior samples of every
    window are decoded together, ``decode_rows // L`` windows per call.
    """
    mu, logvar = net.encode(x)  # (N, Z)
    chunk = max(1, decode_rows // noise.shape[0])
    parts = [
        posterior_log_prob(net, x[i : i + chunk], mu[i : i + chunk], logvar[i : i + chunk], noise)
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(parts), kl_divergence(mu, logvar).sum(dim=-1)
