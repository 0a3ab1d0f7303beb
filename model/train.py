"""Training loop: maximise the ELBO with KL warm-up, free bits, Adam, gradient
clipping and early stopping on a validation split."""

from __future__ import annotations

import copy
import hashlib
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from model.config import ModelConfig
from model.data import Table
from model.errors import TrainingCancelled
from model.network import LSTMVAE, elbo_loss


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int  # the configured maximum
    train_loss: float  # mean training objective per window (with warm-up weight, free bits)
    val_loss: float  # mean negative ELBO per validation window (beta = 1, no free bits)
    train_nll: float
    train_kl: float
    kl_weight: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # the weights of the best validation epoch
    history: list[EpochReport]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    seconds: float


def make_windows(values: torch.Tensor, window: int, stride: int = 1) -> torch.Tensor:
    """(n, D) -> (N, window, D) sliding windows, a view without copying."""
    return values.unfold(0, window, stride).transpose(1, 2)


@dataclass
class EarlyStopping:
    """Which epoch is best, and when to stop.

    Every epoch's validation loss competes for best; progress is a loss below the
    last progress by more than ``min_gain`` (nats per window). Training stops after
    ``patience`` epochs without progress, never within the ``warmup`` epochs.
    """

    patience: int
    min_gain: float
    warmup: int
    best_loss: float = float("inf")
    best_epoch: int = 0
    progress_loss: float = float("inf")
    progress_epoch: int = 0

    def update(self, epoch: int, loss: float) -> bool:
        """Record an epoch's loss; True if it is the best so far."""
        if loss < self.progress_loss - self.min_gain:
            self.progress_loss, self.progress_epoch = loss, epoch
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return epoch - self.progress_epoch >= self.patience and epoch > self.warmup


def kl_weight(config: ModelConfig, epoch: int) -> float:
    """Linear KL warm-up from ~0 to beta over ``kl_warmup_epochs`` (epoch is 1-based)."""
    if config.kl_warmup_epochs == 0:
        return config.beta
    return config.beta * min(1.0, epoch / config.kl_warmup_epochs)


@torch.inference_mode()
def validation_loss(net: LSTMVAE, windows: torch.Tensor, batch_size: int = 512) -> float:
    """Mean negative ELBO per window (single posterior sample, fixed seed)."""
    net.eval()
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for start in range(0, len(windows), batch_size):
        x = windows[start : start + batch_size]  # (batch, T, D)
        mu, logvar = net.encode(x)
        eps = torch.randn(mu.shape, generator=generator)
        mean, std = net.decode(net.reparameterize(mu, logvar, eps), x.shape[1])
        _, nll, kl = elbo_loss(x, mean, std, mu, logvar, beta=1.0, free_bits=0.0)
        total += float(nll + kl) * len(x)
    return total / len(windows)


def _run_epoch(
    net: LSTMVAE,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    config: ModelConfig,
    weight: float,
    should_stop: Callable[[], bool] | None,
) -> tuple[float, float, float]:
    net.train()
    sums = np.zeros(3)
    count = 0
    for (x,) in loader:  # x: (batch, T, D)
        if should_stop is not None and should_stop():
            raise TrainingCancelled("training was cancelled")
        mean, std, mu, logvar = net(x)
        loss, nll, kl = elbo_loss(x, mean, std, mu, logvar, weight, config.free_bits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        sums += np.array([loss.item(), nll.item(), kl.item()]) * len(x)
        count += len(x)
    return tuple(sums / max(count, 1))


def train_network(
    net: LSTMVAE,
    train_windows: torch.Tensor,
    val_windows: torch.Tensor,
    config: ModelConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``net`` in place and load the best validation weights into it."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    dataset = TensorDataset(train_windows)
    sampler = RandomSampler(
        dataset, num_samples=min(len(dataset), config.max_train_windows), generator=generator
    )
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    history: list[EpochReport] = []
    best_state = copy.deepcopy(net.state_dict())
    values_per_window = train_windows.shape[1] * train_windows.shape[2]  # T x D
    stopping = EarlyStopping(
        config.patience, config.min_delta * values_per_window, config.kl_warmup_epochs
    )
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        weight = kl_weight(config, epoch)
        loss, nll, kl = _run_epoch(net, loader, optimizer, config, weight, should_stop)
        val = validation_loss(net, val_windows)
        report = EpochReport(
            epoch, config.epochs, loss, val, nll, kl, weight, time.perf_counter() - epoch_start
        )
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)
        # val is the plain negative ELBO whatever the warm-up weight, so every epoch competes
        if stopping.update(epoch, val):
            best_state = copy.deepcopy(net.state_dict())
        if stopping.should_stop(epoch):
            break
    net.load_state_dict(best_state)
    net.eval()
    stopped_early = history[-1].epoch < config.epochs
    return TrainResult(
        best_state,
        history,
        stopping.best_epoch,
        stopping.best_loss,
        stopped_early,
        time.perf_counter() - started,
    )


LIBRARY_VERSION = "0.1.0"


def fingerprint(values: np.ndarray, names: list[str]) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    digest.update("\x1f".join(names).encode())
    return digest.hexdigest()


def training_metadata(table: Table, cut: int, result: TrainResult, seconds: float) -> dict:
    """What a model records about its training (the artifact's ``metadata``)."""
    values, names = table.values, table.feature_names
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_seconds": round(seconds, 3),
        "data_fingerprint": fingerprint(values, names),
        "n_points": len(values),
        "n_train_points": cut,
        "n_validation_points": len(values) - cut,
        "fill_ratio": dict(table.fill_ratio),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "validation_loss": result.best_val_loss,
        "history": [report.to_dict() for report in result.history],
        "versions": {
            "lvad": LIBRARY_VERSION,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
