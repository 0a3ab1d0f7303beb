"""A floor under the log-probability of two-valued variables at their known values,
in the ranking score.

Commands, switches and status flags take one or two values. The decoder's Gaussian
describes them badly: it cannot know when a command fires, and a variable that
barely moved in training has a tiny normalization scale and the smallest output
std, so an ordinary switch to its other value costs hundreds of nats and outweighs
any real anomaly of a continuous variable (SMAP and MSL, docs/quality.md).

For such a variable, a value it took in training is a known event whose rate the
training data tell: it changed value ``c`` times in ``n`` training points. Its
log-probability at a known value is therefore floored at the log-rate of a change,

    log p[t, d] >= log((c + 1) / n)        when x[t, d] is one of its training values

(``c + 1``: a variable that never changed still may, once). A value it never took
keeps the model's log-probability in full: that is new behaviour. Variables with
more values are not touched.

Only the ranking score has the floor (``Detector``). The reported log-probabilities,
attribution and the alarm keep the Gaussian's: the alarm's threshold is fitted on
validation scores, which the floor leaves so quiet that the threshold came out too
tight, and attribution on SMD lost more than it gained (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.errors import ArtifactError

MAX_LEVELS = 2  # variables with at most this many distinct training values are floored
# a value within this of a training value (relative, and absolute in normalized units)
# is that value: a few float32 steps of the normalization
TOLERANCE = 1e-5


@dataclass(frozen=True, eq=False)
class LevelFloor:
    """The variables floored, their training values and their floors (see the module doc)."""

    columns: np.ndarray  # (K,) int, indices of the variables floored
    levels: np.ndarray  # (K, MAX_LEVELS) float, their training values (normalized units)
    floor: np.ndarray  # (K,) float, nats: log((changes + 1) / n), <= 0

    @classmethod
    def fit(cls, normalized: np.ndarray) -> LevelFloor:
        """From the normalized training series (n, D)."""
        x = np.asarray(normalized, dtype=np.float64)
        columns, levels, floor = [], [], []
        for d in range(x.shape[1]):
            values = np.unique(x[:, d])
            if len(values) <= MAX_LEVELS:
                changes = int(np.count_nonzero(np.diff(x[:, d])))
                columns.append(d)
                levels.append(np.resize(values, MAX_LEVELS))  # one value: repeated
                floor.append(float(np.log((changes + 1) / len(x))))
        return cls(
            np.asarray(columns, dtype=np.int64),
            np.asarray(levels, dtype=np.float64).reshape(-1, MAX_LEVELS),
            np.asarray(floor, dtype=np.float64),
        )

    @classmethod
    def none(cls) -> LevelFloor:
        """No variable floored: models saved before the floor existed score as they did."""
        return cls(np.zeros(0, np.int64), np.zeros((0, MAX_LEVELS)), np.zeros(0))

    def apply(self, log_prob: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``log_prob`` (..., D) with the floor applied where ``values`` (..., D, normalized,
        the same points) are at a training value; NaN stays NaN. One variable at a time:
        besides the result, the temporaries are one variable's column."""
        if not len(self.columns):
            return log_prob
        out = np.array(log_prob, dtype=np.float64, copy=True)
        for k, d in enumerate(self.columns.tolist()):
            x = values[..., d]
            known = np.zeros(x.shape, dtype=bool)
            for level in self.levels[k]:
                known |= np.isclose(x, level, rtol=TOLERANCE, atol=TOLERANCE)
            column = out[..., d]  # a view: the floor is written into ``out``
            np.maximum(column, self.floor[k], out=column, where=known)
        return out

    def to_dict(self) -> dict[str, list]:
        return {
            "columns": self.columns.tolist(),
            "levels": self.levels.tolist(),
            "floor": self.floor.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, n_features: int) -> LevelFloor:
        """Rebuild from ``to_dict`` output for a model of ``n_features`` variables;
        ArtifactError if it is malformed."""
        try:
            floor = cls(
                np.asarray(data["columns"], dtype=np.int64).reshape(-1),
                np.asarray(data["levels"], dtype=np.float64).reshape(-1, MAX_LEVELS),
                np.asarray(data["floor"], dtype=np.float64).reshape(-1),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"level floor: {exc!r}") from exc
        k = len(floor.columns)
        shapes_ok = len(floor.levels) == k == len(floor.floor)
        columns_ok = k == len(set(floor.columns.tolist())) and np.all(
            (floor.columns >= 0) & (floor.columns < n_features)
        )
        values_ok = np.all(np.isfinite(floor.levels)) and np.all(
            np.isfinite(floor.floor) & (floor.floor <= 0)
        )
        if not (shapes_ok and columns_ok and values_ok):
            raise ArtifactError("level floor: inconsistent columns, levels or floors")
        return floor
