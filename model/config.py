"""Model hyper-parameters: frozen, and saved inside every artifact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from model.errors import DataError


@dataclass(frozen=True)
class Bound:
    """An allowed range: ``low`` <= value <= ``high``, or < where ``open`` says so."""

    low: float
    high: float
    open: tuple[bool, bool] = (False, False)  # (low excluded, high excluded)
    optional: bool = False  # None is allowed too

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        above = value > self.low if self.open[0] else value >= self.low
        below = value < self.high if self.open[1] else value <= self.high
        return above and below

    def __str__(self) -> str:
        left = "(" if self.open[0] else "["
        right = ")" if self.open[1] else "]"
        text = f"{left}{_number(self.low)}, {_number(self.high)}{right}"
        return f"{text} or null" if self.optional else text


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


# Every parameter's range (docs/service.md lists them; a job outside them is a 422).
# The upper ends keep one job within a machine: a training step holds about
# 48 bytes x batch_size x window x hidden_size x num_layers of activations, bounded
# as a whole by MAX_ACTIVATIONS.
BOUNDS = {
    "window": Bound(8, 1024),
    "hidden_size": Bound(1, 1024),
    "latent_dim": Bound(1, 256),
    "num_layers": Bound(1, 8),
    "min_std": Bound(0, 10, open=(True, False)),
    "epochs": Bound(1, 10_000),
    "batch_size": Bound(1, 4096),
    "learning_rate": Bound(0, 1, open=(True, False)),
    "grad_clip": Bound(0, 1e6, open=(True, False)),
    "beta": Bound(0, 100),
    "kl_warmup_epochs": Bound(0, 10_000),
    "free_bits": Bound(0, 100),
    "patience": Bound(1, 10_000),
    "min_delta": Bound(0, 1e6),
    "val_fraction": Bound(0, 1, open=(True, True)),
    "train_stride": Bound(1, 1024),
    "max_train_windows": Bound(1, 1_000_000),
    "seed": Bound(0, 2**32 - 1),
    "mc_samples": Bound(1, 64),
    "score_stride": Bound(1, 1024),
    "smooth_window": Bound(1, 4096, optional=True),
    "risk": Bound(0, 1, open=(True, True)),
    "regime_windows": Bound(0, 100),
    "level_windows": Bound(0, 100),
    "min_run": Bound(1, 1024),
    "confirm_level": Bound(0, 1, open=(False, True)),
    "recent_windows": Bound(0, 100),
    "max_period": Bound(0, 8192),
    "held_level": Bound(0, 1),
    "lone_level": Bound(0, 1),
    "lone_others": Bound(1, 64),
    "carry_windows": Bound(0, 16),
    "top_k": Bound(1, 100),
}
MAX_ACTIVATIONS = 2**25  # batch_size x window x hidden_size x num_layers
# points a stream's state keeps (model/stream.py): regime_windows x window and
# level_windows x window each (after a regime change also the replaced threshold's level
# window; the refitted one holds at most half the regime window), recent_windows x
# window + 2 x smoothing ranking scores, and up to max_period + window / 2 of them for
# the seasonal check; the state is saved after every chunk a service scores
MAX_STREAM_POINTS = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines how a detector is built, trained and scored.

    Units: ``window`` and strides are time steps; ``min_std`` is in normalized
    (z-score) units; ``risk`` is the target false-alarm probability per time step.
    """

    # architecture
    window: int = 32  # T, time steps per window
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
    # width of the moving average of the per-step results: None = the window (default),
    # 1 = off; the ranking score averages over half, once and twice it, the alarm over
    # it and also sees the unsmoothed score (model/alarm.py)
    smooth_window: int | None = None
    risk: float = 1e-3  # POT threshold risk level q
    # streams (model/stream.py), in windows: the regime window W (a third of W or more
    # flagged: the threshold is refitted on it; also the drift window; 0 = neither) and
    # DSPOT's level window (0 = plain SPOT)
    regime_windows: int = 10
    level_windows: int = 0
    # points in a row above the stream's limit before they are flagged (1: each point
    # above it): longer runs page less often and miss the events only a spike reaches
    min_run: int = 1
    # a point above the limit is flagged only where the ranking score is also above this
    # quantile of the validation's ranking scores (model/alarm.py; 0: no such check)
    confirm_level: float = 0.95
    # ... and above the 90 % quantile of the ranking scores of the last recent_windows x
    # window points not above the limit, ending one ranking width before it: it must
    # stand out from the stream's recent past too (model/alarm.py; 0: no such check)
    recent_windows: int = 5
    # ... and, where the training data are periodic (a period of at most max_period
    # points, found at training), it or its run's first point above the highest ranking
    # score within half a window of the same phase one period back (model/season.py;
    # 0: no such check)
    max_period: int = 2048
    # a point below a stream's limit, where the bound on its tail holds the limit above
    # the tail's 1 - risk quantile and the point is beyond that quantile, is flagged
    # where its ranking score is above this quantile of the validation's (1: their
    # highest) and the stream's drift is at most 0.5 (model/alarm.py; 0: never)
    held_level: float = 1.0
    # a flag with fewer than lone_others others within half a window before it (the
    # first points of an event, or a lone point) is kept only where its ranking score
    # is above this quantile of the validation's (1: their highest) and the highest of
    # the recent check's span: an event that starts moderately pages from its
    # (lone_others + 1)th flag, a lone moderate point not at all (model/alarm.py; 0, or
    # min_run above 1: no such check). 2 also drops two-point runs: fewer false
    # alerts, and short events lost on server metrics (docs/quality.md)
    lone_level: float = 1.0
    lone_others: int = 1
    # a flagged run of a stream scored as series is carried on while the ranking score
    # stays above its alert's bar, up to carry_windows x window points past the last
    # point above the limit or flagged: a long anomaly stays flagged, not only its few
    # points above the limit; nothing more pages (model/carry.py; 0, or min_run above 1:
    # no carry)
    carry_windows: int = 1
    top_k: int = 3  # variables reported per anomalous point

    def __post_init__(self) -> None:
        bad = [name for name, bound in BOUNDS.items() if not bound.holds(getattr(self, name))]
        if bad:
            values = ", ".join(
                f"{name}={getattr(self, name)!r} (allowed: {BOUNDS[name]})" for name in bad
            )
            raise DataError(f"invalid model configuration: {values}", field=bad[0])
        activations = self.batch_size * self.window * self.hidden_size * self.num_layers
        if activations > MAX_ACTIVATIONS:
            raise DataError(
                f"invalid model configuration: batch_size x window x hidden_size x num_layers "
                f"= {activations:,}; the most allowed is {MAX_ACTIVATIONS:,} (about 1.6 GB "
                "of activations per training step)",
                field="batch_size",
            )
        recent = self.recent_windows * self.window + 2 * self.smoothing  # + the ranking's
        kept = {  # widest average, the gap before each point (model/alarm.py)
            "regime_windows": ("x window", self.regime_windows * self.window),
            "level_windows": ("x window", self.level_windows * self.window),
            "recent_windows": ("x window + 2 x smoothing", recent if self.recent_windows else 0),
            "max_period": ("+ window / 2", self.max_period + self.window // 2),
        }
        for name, (formula, points) in kept.items():
            if points > MAX_STREAM_POINTS:
                raise DataError(
                    f"invalid model configuration: {name} {formula} = {points:,} points; "
                    f"a stream keeps at most {MAX_STREAM_POINTS:,}",
                    field=name,
                )

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
