"""Per-variable normalization, fitted on training data and stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.errors import DataError, FeatureMismatchError

_MIN_STD = 1e-8  # below this a variable counts as constant: std 1, so it maps to 0


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-variable z-score fitted on training data; constant variables map to 0."""

    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64, > 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise DataError(f"normalizer mean/std shapes differ: {mean.shape} vs {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError("normalizer mean/std must be finite and std positive")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, values: Any) -> Normalizer:
        data = np.asarray(values, dtype=np.float64)
        if data.ndim < 2 or data.size == 0:
            raise DataError(f"cannot fit a normalizer on data of shape {data.shape}")
        data = data.reshape(-1, data.shape[-1])  # (n, D)
        if not np.isfinite(data).all():
            raise DataError("cannot fit a normalizer on non-finite values")
        std = data.std(axis=0)  # (D,)
        return cls(mean=data.mean(axis=0), std=np.where(std < _MIN_STD, 1.0, std))

    def transform(self, values: Any) -> np.ndarray:
        data = self._check_width(values)  # (..., D)
        return ((data - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, values: Any) -> np.ndarray:
        data = self._check_width(values)  # (..., D)
        return data * self.std + self.mean

    def log_jacobian(self, steps: int) -> float:
        """log |det| of mapping ``steps`` normalized rows back to original units: a negative
        log-likelihood in normalized units plus this is the same in original units."""
        return steps * float(np.log(self.std).sum())

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        if not isinstance(data, dict) or set(data) != {"mean", "std"}:
            raise DataError("a normalizer needs exactly the keys 'mean' and 'std'")
        try:
            mean, std = (np.asarray(data[k], dtype=np.float64) for k in ("mean", "std"))
        except (TypeError, ValueError) as exc:
            raise DataError(f"normalizer mean/std must be lists of numbers: {exc}") from exc
        return cls(mean=mean, std=std)

    def _check_width(self, values: Any) -> np.ndarray:
        data = np.asarray(values, dtype=np.float64)
        width = self.mean.shape[0]
        if data.ndim == 0 or data.shape[-1] != width:
            got = data.shape[-1] if data.ndim else 0
            raise FeatureMismatchError(f"expected {width} variable(s) in the last axis, got {got}")
        return data
