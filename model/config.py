"""Model hyper-parameters: frozen, and saved inside every artifact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from model.errors import DataError


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines how a detector is built, trained and scored.

    Units: ``window`` and strides are time steps; ``min_std`` is in normalized
    (z-score) units; ``risk`` is the target false-alarm probability per time step.
    """

    # architecture
    window: int = 32  # T, time steps per window (>= 8)
    hidden_size: int = 64  # LSTM units in encoder and decoder
    latent_dim: int = 8  # dimension of z
    num_layers: int = 1  # stacked LSTM layers each way
    min_std: float = 0.05  # floor of the decoder's output std, keeps log p(x|z) finite
    # training
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    grad_clip: float = 5.0
    beta: float = 1.0  # weight of the KL term at the end of warm-up
    kl_warmup_epochs: int = 5  # KL weight rises linearly from 0 to beta
    free_bits: float = 0.1  # nats per latent dim below which KL is not penalised
    # early stopping: stop after ``patience`` epochs without progress, where progress is a
    # validation loss below the last progress by more than min_delta nats per value
    # (window x variables values per window); the best epoch's weights are kept either way
    patience: int = 3
    min_delta: float = 0.01
    val_fraction: float = 0.2  # tail of the training series held out (validation, threshold)
    train_stride: int = 1  # step between training windows
    max_train_windows: int = 20_000  # cap per epoch (random subset) to bound training time
    seed: int = 0
    # scoring
    # L, posterior samples per window for reconstruction probability: the scoring time
    # grows with L, and 4 ranks as well as 10 (docs/quality.md)
    mc_samples: int = 4
    score_stride: int = 1  # step between scoring windows of a long series
    # moving average of the per-step results for the ranking score: None = the window
    # (default), 1 = off; the alarm also sees the unsmoothed score (model/alarm.py)
    smooth_window: int | None = None
    risk: float = 1e-3  # POT threshold risk level q
    top_k: int = 3  # variables reported per anomalous point

    def __post_init__(self) -> None:
        checks = {
            "window": self.window >= 8,
            "hidden_size": self.hidden_size >= 1,
            "latent_dim": self.latent_dim >= 1,
            "num_layers": self.num_layers >= 1,
            "min_std": self.min_std > 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "grad_clip": self.grad_clip > 0,
            "beta": self.beta >= 0,
            "kl_warmup_epochs": self.kl_warmup_epochs >= 0,
            "free_bits": self.free_bits >= 0,
            "patience": self.patience >= 1,
            "min_delta": self.min_delta >= 0,
            "val_fraction": 0 < self.val_fraction < 1,
            "train_stride": self.train_stride >= 1,
            "max_train_windows": self.max_train_windows >= 1,
            "mc_samples": self.mc_samples >= 1,
            "score_stride": self.score_stride >= 1,
            "smooth_window": self.smooth_window is None or self.smooth_window >= 1,
            "risk": 0 < self.risk < 1,
            "top_k": self.top_k >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise DataError(f"invalid model configuration: {values}", field=bad[0])

    @property
    def smoothing(self) -> int:
        """Width of the moving average over per-step results (1: none)."""
        return self.window if self.smooth_window is None else self.smooth_window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a mapping, refusing unknown keys (names them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown model parameter(s): {', '.join(unknown)}", field=unknown[0])
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Any], *, text: bool = False) -> ModelConfig:
        """The defaults with ``overrides`` applied: values typed as JSON gives them (a job's
        ``params``), or with ``text`` as strings to parse (the command line's
        ``--set NAME=VALUE``). DataError names an unknown parameter or a bad value."""
        kinds = {f.name: str(f.type).removesuffix(" | None") for f in fields(cls)}
        typed = {}
        for name, value in overrides.items():
            if name not in kinds:
                known = ", ".join(sorted(kinds))
                raise DataError(f"unknown model parameter {name!r}; known: {known}", field=name)
            typed[name] = _typed(name, value, kinds[name], text)
        return cls().replace(**typed)


_KINDS = {"int": (int, "an integer"), "float": (float, "a number")}


def _typed(name: str, value: Any, kind: str, text: bool) -> int | float:
    """``value`` as the parameter's type: text is parsed, JSON numbers are checked."""
    caster, described = _KINDS[kind]
    if text and isinstance(value, str):
        try:
            return caster(value)
        except ValueError:
            pass
    elif not isinstance(value, bool) and isinstance(
        value, (int,) if kind == "int" else (int, float)
    ):
        return caster(value)
    raise DataError(f"model parameter {name} must be {described}, got {value!r}", field=name)
