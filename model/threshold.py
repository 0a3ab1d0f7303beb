"""A label-free alarm threshold by extreme-value theory, and a calibrated severity.

Method (Peaks Over Threshold, as in Siffer et al. 2017, "SPOT"): at training time
the detector scores held-out *normal* data. Scores above a high empirical quantile
``t0`` (``init_level``, default 98 %) are "peaks"; by the Pickands-Balkema-de Haan
theorem their excesses ``s - t0`` follow a generalized Pareto distribution (GPD)
with shape ``gamma`` and scale ``sigma``, fitted by maximum likelihood
(``scipy.stats.genpareto.fit`` with the location fixed at 0). With ``n`` scores
and ``N_t`` peaks, the score exceeded by a normal point with probability ``q``
(``risk``) is::

    z_q = t0 + sigma / gamma * ((q * n / N_t) ** -gamma - 1)     (gamma != 0)
    z_q = t0 - sigma * log(q * n / N_t)                          (gamma ~ 0)

Unlike an empirical quantile, ``z_q`` extrapolates beyond the largest score seen,
so a small risk (1e-3 or less) stays meaningful with a few thousand scores.

The shape is at most ``MAX_SHAPE`` = 1: a GPD with ``gamma >= 1`` has no mean.
Fitted on the few peaks of a short validation tail that span orders of magnitude,
the unconstrained fit reaches shapes far above 1, and ``z_q`` extrapolated from such
a tail lies orders of magnitude beyond every score seen: a limit that nothing
exceeds again, in a stream whose tail is refitted on ever larger normal peaks.
Above the bound the fit keeps ``gamma = 1`` and the scale of largest likelihood
for it (``docs/quality.md`` measures the change).

Fallback (``method == "quantile"``): the empirical ``1 - risk`` quantile is used
when there are fewer than ``min_peaks`` peaks (too little data, or many tied
scores, e.g. a constant series), when the fit raises or gives non-finite
parameters or a non-positive scale, or when ``z_q`` is non-finite or not above
``t0`` (this happens when ``risk >= N_t / n``, i.e. the risk is not in the tail).

Severity: ``severity(s) = 1 - P(normal score >= s)``, in [0, 1] and non-decreasing
in ``s``; at the threshold it is ``1 - risk``. ``P`` is estimated as follows.

* At or below ``t0``: the empirical survival function, linearly interpolated
  between ~101 stored quantiles (``reference``, 0 %..100 %) of the fitting scores,
  and never below ``N_t / n`` so that the curve cannot rise at ``t0``.
* Above ``t0`` with POT: ``N_t / n * GPD.sf(s - t0)`` (equals ``risk`` at ``z_q``).
* With the quantile fallback the point (``value``, ``risk``) is added to the
  interpolated empirical curve (unless ``value`` is a tied reference quantile,
  where the empirical curve is kept), and ``P`` is floored at ``1 / (n + 1)``: a score
  beyond everything seen is judged "rarer than any of the n normal scores" rather
  than impossible.

Scores are "higher = more anomalous"; an alarm is ``score > value`` beyond the
scores' resolution (``exceeds``). NaN scores give NaN probability and severity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import genpareto

from model.errors import ArtifactError, DataError, TrainingError

REFERENCE_SIZE = 101  # stored quantiles 0 %, 1 %, ..., 100 %
MAX_SHAPE = 1.0  # the heaviest tail fitted (module doc)
_GAMMA_EPS = 1e-8  # |gamma| below this uses the exponential (gamma -> 0) limit
_METHODS = ("pot", "quantile")
# The same window's score, averaged and summed in another order (another chunk,
# another request, another code path), differs in its last digits (~1e-14 of its
# value). A score closer than this share of a level (at least of 1 nat) is at the
# level, not above it (``exceeds``). The bound stays below float32's resolution (~1e-7
# of a value): the first steps of an anomaly on a constant channel can move its score
# by only a few times that (docs/quality.md).
LARGEST = 1e300  # +inf scores (log p = -inf) are kept as this: stream states stay JSON
RESOLUTION = 1e-9


def above(level: float) -> float:
    """The least score that ``exceeds`` ``level``: the level plus the scores' resolution
    (``RESOLUTION``); an infinite level stays itself."""
    return level + RESOLUTION * max(1.0, abs(level)) if math.isfinite(level) else level


def exceeds(scores: Any, level: float) -> Any:
    """``scores > level`` beyond the scores' resolution (``RESOLUTION``). It matters where
    normal data score one value over and over (a constant channel): the validation's
    quantiles, a threshold among them, are that value, and rounding alone would flag
    or count as peaks the later points that score it again. NaN: False."""
    return np.asarray(scores, dtype=float) > above(level)


@dataclass(frozen=True)
class Threshold:
    """An alarm threshold on anomaly scores, fitted on normal data (see module doc)."""

    value: float  # alarm threshold: score > value => anomaly
    method: str  # "pot" or "quantile" (fallback)
    risk: float  # q, target probability that a normal score exceeds `value`
    initial: float  # t0, the peaks threshold = empirical quantile at init_level
    shape: float | None  # GPD shape gamma (xi), None unless method == "pot"
    scale: float | None  # GPD scale sigma, None unless method == "pot"
    n_peaks: int  # N_t, fitting scores strictly above t0
    n_scores: int  # n, finite fitting scores
    reference: list[float]  # empirical quantiles at levels linspace(0, 1, len(reference))

    def exceedance_probability(self, scores: Any) -> np.ndarray:
        """Estimated probability that a normal score is >= each of ``scores``."""
        s = np.asarray(scores, dtype=float)
        pot = self.method == "pot"
        prob = self._pot_probability(s) if pot else self._quantile_probability(s)
        return np.where(np.isnan(s), np.nan, prob)

    def severity(self, scores: Any) -> np.ndarray:
        """``1 - exceedance_probability``: in [0, 1], non-decreasing, ~``1 - risk`` at ``value``
        (above it where a stream's ``z_min`` holds ``value`` up: model/spot.py)."""
        return 1.0 - self.exceedance_probability(scores)

    def _pot_probability(self, s: np.ndarray) -> np.ndarray:
        tail_mass = self.n_peaks / self.n_scores
        levels = np.linspace(0.0, 1.0, len(self.reference))
        body = np.maximum(_survival(s, np.asarray(self.reference), levels), tail_mass)
        with np.errstate(all="ignore"):
            excess = np.maximum(s - self.initial, 0.0)
            tail = tail_mass * genpareto.sf(excess, self.shape, loc=0.0, scale=self.scale)
        return np.where(s > self.initial, tail, body)

    def _quantile_probability(self, s: np.ndarray) -> np.ndarray:
        ref = np.asarray(self.reference)
        levels = np.linspace(0.0, 1.0, len(ref))
        at = int(np.searchsorted(ref, self.value, side="left"))
        if at < len(ref) and ref[at] > self.value:  # value strictly inside a gap, so
            ref = np.insert(ref, at, self.value)  # levels[at - 1] < 1 - risk < levels[at]
            levels = np.insert(levels, at, 1.0 - self.risk)
        return np.maximum(_survival(s, ref, levels), 1.0 / (self.n_scores + 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able types only."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        """Rebuild from :meth:`to_dict` output; raises ArtifactError if it is malformed."""
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ArtifactError(f"threshold: missing keys {missing}, unknown keys {unknown}")
        try:
            threshold = cls(
                value=float(data["value"]),
                method=str(data["method"]),
                risk=float(data["risk"]),
                initial=float(data["initial"]),
                shape=None if data["shape"] is None else float(data["shape"]),
                scale=None if data["scale"] is None else float(data["scale"]),
                n_peaks=int(data["n_peaks"]),
                n_scores=int(data["n_scores"]),
                reference=[float(v) for v in data["reference"]],
            )
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"threshold: invalid field type ({exc})") from exc
        _check_consistent(threshold)
        return threshold


def fit_threshold(
    scores: np.ndarray,
    risk: float = 1e-3,
    init_level: float = 0.98,
    min_peaks: int = 10,
) -> Threshold:
    """Fit the alarm threshold on anomaly scores of held-out normal data.

    Non-finite scores (NaN, +-inf) are dropped. Raises DataError for parameters
    out of range and TrainingError when fewer than 2 finite scores remain.
    """
    _check_parameters(risk, init_level, min_peaks)
    x = np.asarray(scores, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise TrainingError(
            f"cannot fit an alarm threshold: {x.size} finite score(s), at least 2 needed"
        )
    t0 = float(np.quantile(x, init_level))
    excesses = x[exceeds(x, t0)] - t0
    common = {
        "risk": float(risk),
        "initial": t0,
        "n_peaks": int(excesses.size),
        "n_scores": int(x.size),
        "reference": [float(v) for v in np.quantile(x, np.linspace(0, 1, REFERENCE_SIZE))],
    }
    fit = fit_gpd(excesses) if excesses.size >= min_peaks else None
    if fit is not None:
        shape, scale = fit
        z_q = pot_quantile(t0, shape, scale, risk * x.size / excesses.size)
        if math.isfinite(z_q) and z_q > t0:
            return Threshold(value=z_q, method="pot", shape=shape, scale=scale, **common)
    value = float(np.quantile(x, 1.0 - risk))
    return Threshold(value=value, method="quantile", shape=None, scale=None, **common)


def fit_gpd(excesses: np.ndarray) -> tuple[float, float] | None:
    """(shape, scale) of a GPD fitted to positive excesses by maximum likelihood, or None.

    Grimshaw's reduction: with theta = shape / scale, the likelihood's maximum over
    (shape, scale) for a given theta is at shape = mean(log(1 + theta y)), so the fit
    is a search over theta alone (the profile likelihood), on a grid that is then
    refined by a bounded Brent search: ~1 ms for 500 excesses against ~30 ms for
    ``scipy.stats.genpareto.fit``, which matters when the tail is refitted at every
    peak of a stream (``model/spot.py``). Shapes at or below -1, where the likelihood
    is unbounded, are not considered; above ``MAX_SHAPE`` neither: the fit is then the
    likeliest GPD of shape ``MAX_SHAPE`` (``_theta_at_shape``).
    """
    y = np.asarray(excesses, dtype=float)
    if y.size < 2 or not np.all(np.isfinite(y)) or y.min() <= 0 or np.ptp(y) == 0:
        return None
    top, mean = float(y.max()), float(y.mean())
    # theta in (-1/top, 0): dense near both ends; theta > 0: shapes up to very heavy tails
    fractions = np.concatenate([1 - np.geomspace(1e-6, 0.5, 16), np.geomspace(0.5, 1e-4, 16)[1:]])
    grid = np.concatenate([-fractions / top, [0.0], np.geomspace(1e-4, 1e4, 48) / mean])
    values = _profile_log_likelihood(grid, y)
    best = int(np.nanargmax(values))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    found = minimize_scalar(
        lambda theta: -_profile_log_likelihood(np.array([theta]), y)[0],
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-10 / mean},
    )
    theta = float(found.x) if -found.fun >= values[best] else float(grid[best])
    if abs(theta) * mean < 1e-9:
        shape, scale = 0.0, mean  # the exponential limit
    else:
        shape = float(np.mean(np.log1p(theta * y)))
        scale = shape / theta
    # at the bound: the fit if its shape is above it, or if the grid's best is its last
    # point (theta = 1e4 / mean, short of the heaviest tails' optimum) and the bound is
    # likelier
    if shape > MAX_SHAPE or best == len(grid) - 1:
        bound = (MAX_SHAPE, MAX_SHAPE / _theta_at_shape(y, MAX_SHAPE))
        if shape > MAX_SHAPE or _log_likelihood(y, *bound) > _log_likelihood(y, shape, scale):
            shape, scale = bound
    if not (math.isfinite(shape) and math.isfinite(scale) and scale > 0):
        return None
    return shape, scale


def _log_likelihood(y: np.ndarray, shape: float, scale: float) -> float:
    """The GPD log-likelihood of excesses ``y``; -inf outside the support or for a scale
    that is not a positive number."""
    value = float(genpareto.logpdf(y, shape, loc=0.0, scale=scale).sum())
    return value if value == value else -math.inf


def _theta_at_shape(y: np.ndarray, shape: float) -> float:
    """theta = shape / scale at the scale of largest likelihood for a fixed ``shape`` > 0.

    Setting the likelihood's derivative in the scale to zero gives
    ``mean(theta y / (1 + theta y)) = shape / (1 + shape)``, whose left side rises
    from 0 to 1 with theta: one root, found by Brent's method on log(theta) (NaN if
    it is not within twelve orders of magnitude of 1 / mean(y)).
    """
    target = shape / (1.0 + shape)
    if not 0.0 < target < 1.0:  # shape not finite and positive: no such scale
        return math.nan

    def gap(log_theta: float) -> float:
        t = math.exp(log_theta) * y
        return float(np.mean(t / (1.0 + t))) - target

    mean = float(y.mean())
    try:
        return math.exp(brentq(gap, math.log(1e-12 / mean), math.log(1e12 / mean), xtol=1e-12))
    except ValueError:  # no sign change within the bracket
        return math.nan


def _profile_log_likelihood(thetas: np.ndarray, y: np.ndarray) -> np.ndarray:
    """GPD log-likelihood of ``y`` maximised over the shape for each theta (NaN: not
    allowed, shape <= -1)."""
    n, mean = y.size, float(y.mean())
    exponential = -n * math.log(mean) - n
    out = np.full(thetas.shape, exponential)
    nonzero = np.abs(thetas) * mean >= 1e-9
    with np.errstate(all="ignore"):
        logs = np.log1p(np.outer(thetas[nonzero], y)).sum(axis=1)  # (k,)
        shape = logs / n
        value = -n * np.log(shape / thetas[nonzero]) - (1 / shape + 1) * logs
    out[nonzero] = np.where((shape > -1) & np.isfinite(value), value, np.nan)
    return out


def pot_quantile(t0: float, shape: float, scale: float, ratio: float) -> float:
    """z_q for ``ratio = q * n / N_t``; non-finite on overflow."""
    try:
        if abs(shape) < _GAMMA_EPS:
            return t0 - scale * math.log(ratio)
        return t0 + scale / shape * (ratio**-shape - 1.0)
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.nan


def _survival(s: np.ndarray, ref: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """P(X >= s) from the quantile curve ``ref`` (levels ``levels``), linearly interpolated.

    Ties in ``ref`` resolve to the lowest level, so P is non-increasing in ``s``.
    """
    last = len(ref) - 1
    idx = np.searchsorted(ref, s, side="left")  # first i with ref[i] >= s
    lo, hi = np.clip(idx - 1, 0, last), np.clip(idx, 0, last)
    gap = ref[hi] - ref[lo]
    with np.errstate(all="ignore"):
        frac = np.where(gap > 0, (s - ref[lo]) / np.where(gap > 0, gap, 1.0), 1.0)
    cdf = levels[lo] + frac * (levels[hi] - levels[lo])
    cdf = np.where(idx == 0, 0.0, np.where(idx > last, 1.0, cdf))
    return np.clip(1.0 - cdf, 0.0, 1.0)


def _check_parameters(risk: float, init_level: float, min_peaks: int) -> None:
    checks = {
        "risk": 0 < risk < 1,
        "init_level": 0 < init_level < 1,
        "min_peaks": min_peaks >= 1,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        values = {"risk": risk, "init_level": init_level, "min_peaks": min_peaks}
        shown = ", ".join(f"{name}={values[name]!r}" for name in bad)
        raise DataError(f"invalid threshold parameter(s): {shown}", field=bad[0])


def _check_consistent(t: Threshold) -> None:
    """Raise ArtifactError if a deserialized threshold cannot be used."""
    problems = []
    if t.method not in _METHODS:
        problems.append(f"unknown method {t.method!r}")
    if t.method == "pot" and (t.shape is None or t.scale is None or not t.scale > 0):
        problems.append("method 'pot' needs a shape and a positive scale")
    if not 0 < t.risk < 1:
        problems.append(f"risk {t.risk} not in (0, 1)")
    if t.n_scores < 2 or not 0 <= t.n_peaks <= t.n_scores:
        problems.append(f"bad counts n_peaks={t.n_peaks}, n_scores={t.n_scores}")
    ref = np.asarray(t.reference)
    if ref.size < 2 or not np.all(np.isfinite(ref)) or np.any(np.diff(ref) < 0):
        problems.append("reference must be >= 2 finite, non-decreasing quantiles")
    if problems:
        raise ArtifactError("threshold: " + "; ".join(problems))
