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

**Learned levels.** A variable held at *one* value all through training (a command
that never fired, a status that never changed) is also floored at a value the series
has already taken: its first point at a new value keeps the Gaussian's surprise,
that is the change; the later ones cost at most a change at its training rate, as
for a training value. Without it, a variable that switched once in the series
charged its new value at every later point as if it were new again (on SMAP and MSL,
docs/quality.md). Each series learns on its own; a stream learns across its chunks,
the values taken kept in its state (``Taken``, at most ``MAX_TAKEN`` per variable:
a variable that keeps taking new values is no switch, and those keep their
surprise). Variables of two training values learn nothing: learning there cost SMD
more than it gained.

Only the ranking score has the floor (``Detector``). The reported log-probabilities,
attribution and the alarm keep the Gaussian's: the alarm's threshold is fitted on
validation scores, which the floor leaves so quiet that the threshold came out too
tight, and attribution on SMD lost more than it gained (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.errors import ArtifactError
from model.stored import stored_integer

MAX_LEVELS = 2  # variables with at most this many distinct training values are floored
# a value within this of a training value (relative, and absolute in normalized units)
# is that value: a few float32 steps of the normalization
TOLERANCE = 1e-5
KEY_DECIMALS = 5  # a value taken is remembered rounded to this (normalized units)
MAX_TAKEN = 4  # values remembered per variable held at one value in training


@dataclass(frozen=True)
class Taken:
    """The values that variables held at one value in training have taken in a stream
    (learned levels, the module doc), each with the position of the point where it
    first did: ``values`` maps a variable's index to {value (normalized, rounded to
    ``KEY_DECIMALS``): first position}. ``at``: the position of the first point of the
    next series given with it (the points a stream has advanced over so far)."""

    at: int = 0
    values: dict[int, dict[float, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = {str(d): [[v, p] for v, p in taken.items()] for d, taken in self.values.items()}
        return {"at": self.at, "values": values}

    @classmethod
    def from_dict(cls, data: Any) -> Taken:
        """Rebuild from ``to_dict`` output (None: nothing taken, a state saved before
        learned levels); ArtifactError if it is malformed."""
        if data is None:
            return cls()
        try:
            at = stored_integer(data["at"])
            values = {
                int(d): {float(v): stored_integer(p) for v, p in pairs}
                for d, pairs in data["values"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"values taken: {exc!r}") from exc
        remembered = [(v, p) for taken in values.values() for v, p in taken.items()]
        sizes_ok = all(d >= 0 and len(taken) <= MAX_TAKEN for d, taken in values.items())
        values_ok = all(np.isfinite(v) and p < at for v, p in remembered)
        if not (sizes_ok and values_ok and at >= 0):
            raise ArtifactError("values taken: inconsistent variables, values or positions")
        return cls(at, values)


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

    def apply(
        self, log_prob: np.ndarray, values: np.ndarray, taken: Taken | None = None
    ) -> np.ndarray:
        """``log_prob`` (..., n, D) with the floor applied where ``values`` (the same
        points, normalized) are at a training value, or, for a variable held at one value
        in training, at a value taken before in the series (``taken``: before its first
        point, a stream's; a batch's series each learn on their own); NaN stays NaN. One
        variable at a time: besides the result, the temporaries are one variable's."""
        if not len(self.columns):
            return log_prob
        taken = taken or Taken()
        out = np.array(log_prob, dtype=np.float64, copy=True)
        for k, d in enumerate(self.columns.tolist()):
            x = values[..., d]
            known = self._at_training_value(k, x)
            if self._one_level(k):
                series, level = x.reshape(-1, x.shape[-1]), known.reshape(-1, x.shape[-1])
                before = taken.values.get(d, {})
                known |= _taken_before(series, level, before, taken.at)[0].reshape(x.shape)
            column = out[..., d]  # a view: the floor is written into ``out``
            np.maximum(column, self.floor[k], out=column, where=known)
        return out

    def learn(self, values: np.ndarray, taken: Taken) -> Taken:
        """``taken`` after the series ``values`` (n, D, normalized), whose first point is
        at ``taken.at``: the values first taken there added, up to ``MAX_TAKEN`` per
        variable."""
        learned = dict(taken.values)
        for k, d in enumerate(self.columns.tolist()):
            if self._one_level(k):
                series = values[np.newaxis, :, d]
                level = self._at_training_value(k, series)
                before = taken.values.get(d, {})
                after = _taken_before(series, level, before, taken.at)[1]
                if after:
                    learned[d] = after
        return Taken(taken.at + len(values), learned)

    def _at_training_value(self, k: int, x: np.ndarray) -> np.ndarray:
        """Where variable ``k``'s values ``x`` (normalized) are at one of its training
        values."""
        known = np.zeros(x.shape, dtype=bool)
        for level in np.unique(self.levels[k]):  # one value: repeated (``fit``)
            known |= np.isclose(x, level, rtol=TOLERANCE, atol=TOLERANCE)
        return known

    def _one_level(self, k: int) -> bool:
        """Variable ``k`` took one value in training (``fit`` repeats it)."""
        return bool(self.levels[k][0] == self.levels[k][1])

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


def _taken_before(
    x: np.ndarray, level: np.ndarray, before: dict[float, int], at: int
) -> tuple[np.ndarray, dict[float, int]]:
    """Where one variable's values ``x`` (B, n: B series of n points, each learning on
    its own, its first point at position ``at``) are, away from its training value
    (``level``, the same shape: at it), at a value that the series took before,
    ``before`` (value: first position, before ``at``) included. Also, for one series
    (B = 1), the values remembered after it: ``before`` and the first ``MAX_TAKEN`` -
    len(before) new ones, in order. Values past that many are never taken: they keep
    their surprise. A pass over ``x`` per value remembered, at most ``MAX_TAKEN``."""
    x = np.asarray(x, dtype=np.float64)
    left = np.isfinite(x) & ~level
    known, after = np.zeros(x.shape, dtype=bool), dict(before)
    if not left.any():
        return known, after
    keys, steps = np.round(x, KEY_DECIMALS), np.arange(x.shape[1])
    remembered = [(value, np.full(len(x), value)) for value in before]
    remembered += [(None, None)] * (MAX_TAKEN - len(before))  # new values, found in turn
    for value, each in remembered:
        if not left.any():
            break
        if each is None:  # the next new value: each series' first point left
            next_point = left.argmax(axis=1)
            each = np.where(left.any(axis=1), keys[np.arange(len(x)), next_point], np.nan)
        at_it = left & (keys == each[:, np.newaxis])
        first = np.where(at_it.any(axis=1), at_it.argmax(axis=1), x.shape[1]) + at
        if value is not None:  # remembered at the earlier of the two
            first = np.minimum(first, before[value])
        known |= at_it & (steps + at > first[:, np.newaxis])
        left &= ~at_it
        if len(x) == 1 and at_it.any():
            after[float(each[0])] = int(first[0])
    return known, after
