"""A stream's alarm state: regime changes, the drift signal, chunks and the round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.errors import ArtifactError
from model.stream import StreamResult, StreamState, advance, start_stream

RISK = 1e-3
WINDOW = 100


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.exponential(size=n)


@pytest.fixture
def state() -> StreamState:
    return start_stream(normal(np.random.default_rng(0), 5_000), RISK, depth=32, window=WINDOW)


def test_a_step_to_a_new_level_is_flagged_once_then_judged_on_its_own(state):
    rng = np.random.default_rng(1)
    before, after = normal(rng, 2_000), normal(rng, 20_000) + 50.0  # a level never seen
    result = advance(state, np.concatenate([before, after]))
    flags = result.flags[2_000:]
    assert flags[: WINDOW // 3].all()  # the step is flagged until a third of the window is
    assert not flags[WINDOW // 3 + 1 : WINDOW].any()  # then refitted, not at half
    assert result.state.rebaselines == 1
    assert flags[WINDOW:].mean() < 5 * RISK  # then the new level is the norm
    assert result.state.drifting and result.drift[-1] == 1.0  # and the drift stays on
    assert result.drift[1_999] < 0.1 and not np.isnan(result.drift).any()


def test_a_regime_change_keeps_the_replaced_threshold_s_bound(state):
    rng = np.random.default_rng(11)
    result = advance(state, np.concatenate([normal(rng, 1_000), normal(rng, 5_000) + 50.0]))
    assert result.state.rebaselines == 1 and state.spot.z_min is not None
    assert result.state.home.z_min == state.spot.z_min  # back with it when the regime ends
    regime = result.state.spot  # W points: too few peaks for a GPD, and no bound
    assert regime.z_min is None and not regime.z_min_due  # (model/spot.py)
    few = start_stream(normal(rng, 300), RISK, depth=0, window=WINDOW)
    assert few.spot.z_min is None and few.spot.z_min_due  # validation: at its first fit
    assert StreamState.from_dict(json.loads(json.dumps(result.state.to_dict()))) == result.state


def test_without_a_window_the_step_is_flagged_for_ever(state):
    rng = np.random.default_rng(1)
    fixed = start_stream(normal(rng, 5_000), RISK, depth=32, window=0)
    result = advance(fixed, normal(rng, 5_000) + 50.0)
    assert result.flags.all() and result.state.rebaselines == 0
    assert np.isnan(result.state.drift) and not result.state.drifting


def test_a_short_anomaly_is_flagged_and_teaches_nothing(state):
    rng = np.random.default_rng(2)
    scores = normal(rng, 3_000)
    scores[1_000:1_030] += 50.0  # shorter than a third of the window
    result = advance(state, scores)
    assert result.flags[1_000:1_030].all() and result.state.rebaselines == 0
    assert result.flags.sum() < 30 + 10
    assert result.drift.max() == pytest.approx(0.3, abs=0.05)  # 30 of the last 100
    assert not result.state.drifting


def test_after_a_regime_change_the_threshold_follows_a_ramp():
    rng = np.random.default_rng(0)
    validation = normal(rng, 5_000)
    ramp = normal(rng, 4_000) + 50.0 + 0.02 * np.arange(4_000)  # a new level that keeps rising
    ramp[3_000] += 100.0  # and a spike on top of it
    scores = np.concatenate([normal(rng, 1_000), ramp])
    plain = advance(start_stream(validation, RISK, 0, WINDOW), scores)
    level = advance(start_stream(validation, RISK, 0, WINDOW, regime_depth=8), scores)
    for result in (plain, level):
        assert result.flags[1_000 : 1_000 + WINDOW // 3].all()  # the change alerts
    # refitted on its window alone, the threshold is exceeded again as the ramp rises
    assert plain.flags[1_000 + WINDOW :].mean() > 0.1 and plain.state.rebaselines > 10
    # refitted with a level, it follows the ramp and still sees the spike
    assert level.flags[4_000] and level.flags[1_000 + WINDOW :].sum() == 1
    assert level.state.rebaselines == 1 and level.state.spot.depth == 8


@pytest.mark.parametrize("depth", [0, 32], ids=["SPOT", "DSPOT"])
def test_a_long_anomaly_that_ends_gives_the_replaced_threshold_back(depth):
    rng = np.random.default_rng(7)
    state = start_stream(normal(np.random.default_rng(0), 5_000), RISK, depth, WINDOW)
    scores = normal(rng, 6_000)
    scores[1_000:1_300] += 50.0  # long enough for a regime change, then it ends
    scores[4_000:4_020] += 20.0  # a later anomaly, far below the first one's level
    result = advance(state, scores)
    before = result.limits[999]
    assert result.limits[1_200] > 30.0  # the refit on the anomaly's own scores
    assert result.state.rebaselines == 2 and result.state.home is None  # refit, return
    back = result.limits[1_300 + 2 * WINDOW : 4_000]
    assert back.max() < 1.5 * before  # back near the limit before the anomaly
    assert result.flags[4_000:4_020].all()  # not hidden under the first anomaly's limit
    assert result.flags[1_300 + 2 * WINDOW : 4_000].mean() < 10 * RISK
    assert not result.state.drifting
    # the same, chunk by chunk, with chunk edges inside the anomaly and the return
    parts = assert_chunks_match(state, scores, 13, result)
    assert any(p.state.home is not None for p in parts)  # carried between chunks


def assert_chunks_match(
    state: StreamState, scores: np.ndarray, chunks: int, whole: StreamResult
) -> list[StreamResult]:
    """Advance ``state`` over ``scores`` in ``chunks`` consecutive calls and check that the
    per-point results and the last state are those of one call (``whole``)."""
    parts = []
    for chunk in np.array_split(scores, chunks):
        parts.append(advance(parts[-1].state if parts else state, chunk))
    for name in ("flags", "limits", "exceedance", "drift"):
        joined = np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_array_equal(getattr(whole, name), joined, err_msg=name)
    assert parts[-1].state == whole.state
    return parts


def test_a_channel_that_scores_one_value_is_not_flagged_by_rounding():
    """Most windows of a constant channel score one value, which is then also the
    validation's 98 % quantile and the limit: rounding in the last digits must neither
    flag those points, nor count them in the drift, nor start a regime."""
    rng = np.random.default_rng(0)

    def channel(n: int) -> np.ndarray:
        scores = np.where(rng.random(n) < 0.9, -21.64, -21.64 - rng.exponential(size=n))
        return scores * (1.0 + rng.normal(0.0, 1e-13, size=n))

    state = start_stream(channel(400), RISK, depth=0, window=WINDOW)
    later = channel(5_000)
    later[3_000:3_010] = 5.0  # the channel moves
    result = advance(state, later)
    assert not result.flags[:3_000].any() and result.flags[3_000:3_010].all()
    assert result.state.rebaselines == 0 and np.nanmax(result.drift) <= 0.1


def test_chunks_give_the_same_flags_drift_and_state_as_one_call(state):
    rng = np.random.default_rng(3)
    scores = np.concatenate([normal(rng, 1_500), normal(rng, 1_500) + 50.0])
    scores[[10, 2_000]] = np.nan
    scores[500] = np.inf  # log p = -inf: flagged, and the state stays finite
    whole = advance(state, scores)
    assert_chunks_match(state, scores, 9, whole)
    assert whole.state.rebaselines == 1
    assert whole.flags[500] and whole.state.seen == state.seen + 2_998


def test_the_state_round_trips_through_json(state):
    rng = np.random.default_rng(4)
    after = advance(state, np.concatenate([normal(rng, 500), normal(rng, 300) + 50.0])).state
    assert after.home is not None  # the threshold the new level replaced, kept
    text = json.dumps(after.to_dict())
    assert "Infinity" not in text and "NaN" not in text
    assert StreamState.from_dict(json.loads(text)) == after


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("window"),
        lambda d: d.update(scores=[1.0] * (d["window"] + 1)),
        lambda d: d.update(flags=[True] * (len(d["scores"]) + 1)),
        lambda d: d.update(drift_level=float("inf")),
        lambda d: d["spot"].update(depth=-1),
        lambda d: d.update(home={}),
        lambda d: d.update(home={**d["spot"], "depth": d["depth"] + 1}),
        lambda d: d.update(regime_depth=-1),
    ],
    ids=[
        "missing",
        "too many scores",
        "too many flags",
        "infinite",
        "spot",
        "home",
        "home depth",
        "regime depth",
    ],
)
def test_a_damaged_state_is_refused(state, damage):
    data = advance(state, normal(np.random.default_rng(5), 200)).state.to_dict()
    damage(data)
    with pytest.raises(ArtifactError):
        StreamState.from_dict(data)


@pytest.fixture
def spiky() -> np.ndarray:
    """Normal scores with isolated one-point spikes and an anomaly of 20 points."""
    scores = normal(np.random.default_rng(6), 3_000)
    scores[[300, 900, 1_700]] += 50.0
    scores[2_000:2_020] += 50.0
    return scores


def test_a_minimum_run_drops_isolated_spikes_and_keeps_the_anomaly(spiky):
    validation = normal(np.random.default_rng(0), 5_000)
    every = advance(start_stream(validation, RISK, depth=0, window=WINDOW), spiky)
    runs = advance(start_stream(validation, RISK, depth=0, window=WINDOW, min_run=3), spiky)
    assert every.flags[[300, 900, 1_700]].all() and not runs.flags[[300, 900, 1_700]].any()
    assert not runs.flags[2_000:2_002].any() and runs.flags[2_002:2_020].all()
    assert runs.flags.sum() < every.flags.sum() - 3  # the spikes and the run's first 2
    # the threshold sees the same points above it either way
    np.testing.assert_array_equal(every.limits, runs.limits)
    assert runs.state.spot == every.state.spot and runs.state.run == 0


def test_a_run_carries_across_chunks(spiky):
    state = start_stream(normal(np.random.default_rng(0), 5_000), RISK, 0, WINDOW, min_run=3)
    whole = advance(state, spiky)
    first = advance(state, spiky[:2_001])  # the chunk ends one point into the anomaly
    second = advance(first.state, spiky[2_001:])
    assert first.state.run == 1
    np.testing.assert_array_equal(whole.flags, np.concatenate([first.flags, second.flags]))
    assert whole.state == second.state


def test_a_state_saved_before_the_minimum_run_and_the_regime_end_loads(state):
    data = state.to_dict()
    del data["min_run"], data["run"], data["home"], data["regime_depth"]
    loaded = StreamState.from_dict(data)
    assert (loaded.min_run, loaded.run, loaded.home, loaded.regime_depth) == (1, 0, None, 0)
    data.update(min_run=0)
    with pytest.raises(ArtifactError):
        StreamState.from_dict(data)
