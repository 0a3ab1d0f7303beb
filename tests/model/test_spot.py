"""Streaming POT with drift: calibration, following a drift, learning only from unflagged
points, chunking, and the state's round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.errors import ArtifactError
from model.spot import MAX_PEAKS, Z_MIN_RISKS, SpotState, fit_spot, residuals, run_spot
from model.threshold import fit_threshold

RISK = 1e-3


def test_residuals_subtract_the_mean_of_the_previous_scores():
    scores = np.array([1.0, 2, 3, 10, 5])
    np.testing.assert_allclose(residuals(scores, 2), [3 - 1.5, 10 - 2.5, 5 - 6.5])
    np.testing.assert_array_equal(residuals(scores, 0), scores)


@pytest.mark.parametrize("depth", [0, 32])
def test_a_stationary_stream_is_flagged_at_about_the_risk(depth):
    rng = np.random.default_rng(0)
    state = fit_spot(rng.exponential(size=5_000), RISK, depth)
    result = run_spot(state, rng.exponential(size=30_000))
    # flagged points are left out of the peaks, which truncates the tail (module doc)
    assert RISK / 2.5 < result.flags.mean() < RISK * 4
    # severity = 1 - exceedance is calibrated below the threshold: 1 % above 0.99
    assert 0.007 < np.mean(result.exceedance < 0.01) < 0.015
    assert result.state.n_scores == state.n_scores + 30_000 - result.flags.sum()


def test_a_long_stationary_stream_stays_near_the_risk():
    # every refit on a tail without the flagged points lowered z_q, and more points were
    # flagged and left out: without z_min, the last 100,000 of these points had 7x the
    # risk flagged, and the share kept growing
    rng = np.random.default_rng(5)
    validation = rng.gumbel(size=2_000)
    state = fit_spot(validation, RISK, 0)
    scores = rng.gumbel(size=400_000)
    result = run_spot(state, scores)
    assert result.flags[-100_000:].mean() < RISK * 4
    # z_min: the starting fit's z_q at 3x the risk, which the limit never went below
    assert state.z_min == pytest.approx(fit_threshold(validation, Z_MIN_RISKS * RISK).value)
    assert np.nanmin(result.limits) >= state.z_min
    assert np.isclose(result.limits, state.z_min).mean() > 0.5  # it held z_q up
    # and in chunks, the same
    chunked, flags = state, []
    for chunk in np.array_split(scores, 9):
        part = run_spot(chunked, chunk)
        chunked, flags = part.state, [*flags, part.flags]
    np.testing.assert_array_equal(np.concatenate(flags), result.flags)
    assert chunked == result.state


def test_a_start_with_too_few_peaks_for_a_gpd_has_no_bound():
    state = fit_spot(np.random.default_rng(6).exponential(size=200), RISK, 0)
    assert state.tail.method == "quantile" and state.z_min is None and not state.z_min_due


def test_or_takes_it_from_its_first_gpd_fit():
    rng = np.random.default_rng(6)
    state = fit_spot(rng.gumbel(size=300), RISK, 0, bound_at_first_fit=True)  # 6 peaks
    assert state.tail.method == "quantile" and state.z_min is None and state.z_min_due
    result = run_spot(state, rng.gumbel(size=400_000))
    after = result.state
    assert after.tail.method == "pot" and not after.z_min_due
    assert after.z_min is not None and after.z_min <= after.tail.value
    # a limit from 300 points is too low from the start (~7x the risk flagged, and the
    # tail learns nothing above it), but it no longer falls: without z_min, 9x in the
    # first 50,000 points, 24x after 400,000
    early, late = result.flags[:100_000].mean(), result.flags[-100_000:].mean()
    assert late < 1.25 * early and late < 10 * RISK


def test_a_state_saved_before_z_min_refits_as_it_did():
    rng = np.random.default_rng(7)
    state = fit_spot(rng.gumbel(size=2_000), RISK, 0)
    before = {k: v for k, v in state.to_dict().items() if k != "z_min"}
    old = SpotState.from_dict(before)
    assert old.z_min is None
    result = run_spot(old, rng.gumbel(size=200_000))
    assert np.nanmin(result.limits) < state.z_min  # unbounded, as before
    assert result.state.z_min is None


def test_the_level_follows_a_drift_that_the_tail_alone_does_not():
    rng = np.random.default_rng(1)
    normal = rng.exponential(size=5_000)
    drifting = rng.exponential(size=20_000) + np.linspace(0, 30, 20_000)  # +30: far above z_q
    following = run_spot(fit_spot(normal, RISK, depth=64), drifting).flags.mean()
    assert following < RISK * 3
    assert run_spot(fit_spot(normal, RISK, depth=0), drifting).flags.mean() > 10 * following


def test_flagged_points_teach_the_threshold_nothing():
    rng = np.random.default_rng(2)
    state = fit_spot(rng.exponential(size=5_000), RISK, depth=32)
    burst = np.full(500, 1e6)
    result = run_spot(state, burst)
    assert result.flags.all()
    assert result.state == state  # nothing learned from the flagged burst
    np.testing.assert_allclose(result.limits, state.limit)
    assert (result.exceedance < RISK).all()


def test_chunks_give_the_same_flags_and_state_as_one_call():
    rng = np.random.default_rng(3)
    state = fit_spot(rng.exponential(size=2_000), 1e-2, depth=16)
    scores = rng.exponential(size=6_000)
    scores[1000:1010] = 40.0
    scores[[5, 4000]] = np.nan  # skipped, never flagged
    whole = run_spot(state, scores)
    chunked, parts = state, []
    for chunk in np.array_split(scores, 7):
        part = run_spot(chunked, chunk)
        parts.append(part)
        chunked = part.state
    np.testing.assert_array_equal(whole.flags, np.concatenate([p.flags for p in parts]))
    np.testing.assert_array_equal(whole.limits, np.concatenate([p.limits for p in parts]))
    np.testing.assert_allclose(whole.exceedance, np.concatenate([p.exceedance for p in parts]))
    assert whole.state == chunked
    assert whole.flags[1000:1010].all() and not whole.flags[[5, 4000]].any()
    assert whole.state.tail.method == "pot" and whole.state.tail != state.tail  # refitted


def test_the_state_round_trips_through_json_and_stays_bounded():
    rng = np.random.default_rng(4)
    start = fit_spot(rng.exponential(size=3_000), RISK, 8)
    state = run_spot(start, rng.exponential(size=70_000)).state
    assert len(state.peaks) == MAX_PEAKS and state.n_peaks > MAX_PEAKS
    text = json.dumps(state.to_dict())
    assert len(text) < 40_000
    assert SpotState.from_dict(json.loads(text)) == state


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("recent"),
        lambda d: d.update(recent=[1.0] * (d["depth"] + 1)),
        lambda d: d.update(n_peaks=d["n_scores"] + 1),
        lambda d: d.update(since_fit=-1),
        lambda d: d.update(peaks=[float("nan")]),
        lambda d: d.update(z_min=float("inf")),
        lambda d: d.update(z_min=d["tail"]["value"] + 1),
        lambda d: d.update(z_min=d["tail"]["value"], z_min_due=True),
        lambda d: d["tail"].update(method="magic"),
    ],
    ids=[
        "missing",
        "window too long",
        "counts",
        "since fit",
        "nan",
        "z_min",
        "z_min high",
        "z_min due",
        "tail",
    ],
)
def test_a_damaged_state_is_refused(damage):
    rng = np.random.default_rng(5)
    data = fit_spot(rng.exponential(size=1_000), 1e-2, 8).to_dict()
    damage(data)
    with pytest.raises(ArtifactError):
        SpotState.from_dict(data)


def scores_with_outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Exponential scores, 2 % of them raised by 1 to 1000 (log-uniform): a few peaks
    spanning three orders of magnitude, as the scores of real validation tails do."""
    x = rng.exponential(size=n)
    far = rng.random(n) < 0.02
    x[far] += 10 ** rng.uniform(0, 3, far.sum())
    return x


@pytest.mark.parametrize("seed", [1, 2])
def test_few_peaks_spanning_orders_of_magnitude_keep_the_limit_near_the_data(seed):
    # fitted freely, such peaks give tail shapes of 3 to 4 and limits of 5,000 to 19,000
    # (model/threshold.py, MAX_SHAPE): a block at 3x the largest normal score went unseen
    rng = np.random.default_rng(seed)
    state = fit_spot(scores_with_outliers(rng, 400), RISK, 0)
    normal = scores_with_outliers(rng, 5_000)
    result = run_spot(state, np.concatenate([normal, np.full(50, 3 * normal.max())]))
    assert np.nanmax(result.limits) < 2 * normal.max()
    assert result.flags[-50:].all()
    assert result.flags[:-50].mean() < 0.02
