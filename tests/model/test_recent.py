"""The flags' recent check: a point must stand out from the stream's recent past."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from model.alarm import RECENT_LEVEL, recent_checked, recent_reference
from model.config import ModelConfig
from model.errors import ArtifactError, DataError
from model.stream import StreamState, start_stream
from model.threshold import exceeds

SPAN, GAP = 40, 16


def new_state() -> StreamState:
    scores = np.random.default_rng(9).normal(size=2_000)
    return start_stream(scores, 1e-3, 0, 0, recent=(SPAN, GAP))


def expected_reference(
    ranking: np.ndarray,
    above: np.ndarray,
    span: int = SPAN,
    gap: int = GAP,
    level: float = RECENT_LEVEL,
) -> np.ndarray:
    """The reference computed point by point, as the check is specified (``level``: the
    quantile; 1, the highest, is the lone check's)."""
    reference = np.full(len(ranking), np.nan)
    for k in range(len(ranking)):
        begin, end = max(0, k - gap - span), max(0, k - gap)
        window = ranking[begin:end][~above[begin:end] & np.isfinite(ranking[begin:end])]
        if len(window) >= span // 2:
            reference[k] = np.quantile(window, level)
    return reference


def sample(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ranking = rng.normal(size=n)
    ranking[[50, 51, 230]] = np.inf, np.nan, 8.0
    above = rng.random(n) < 0.1
    return ranking, above


def test_the_reference_is_the_quantile_of_the_span_before_the_gap():
    ranking, above = sample()
    reference, recent = recent_reference(ranking, above, [], SPAN, GAP)
    np.testing.assert_allclose(reference, expected_reference(ranking, above), rtol=1e-12)
    assert np.isnan(reference[: GAP + SPAN // 2]).all()  # too little history: no check
    # the next chunk's past: the last span + gap scores, NaN where left out
    assert len(recent) == SPAN + GAP
    np.testing.assert_array_equal(
        np.isnan(recent), above[-SPAN - GAP :] | ~np.isfinite(ranking[-SPAN - GAP :])
    )


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunks_give_the_reference_of_one_call(chunk):
    ranking, above = sample(1)
    whole, whole_recent = recent_reference(ranking, above, [], SPAN, GAP)
    parts, recent = [], []
    for begin in range(0, len(ranking), chunk):
        part = slice(begin, begin + chunk)
        reference, recent = recent_reference(ranking[part], above[part], recent, SPAN, GAP)
        parts.append(reference)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(recent, whole_recent)


def test_noise_of_a_drifted_stretch_is_dropped_and_a_rise_out_of_it_kept():
    rng = np.random.default_rng(2)
    # validation-like scores, then a stretch whose ranking has drifted above the
    # confirmation level, where the alarm score crosses the limit now and then (the
    # alarm is the unsmoothed score: its spikes barely move the ranking), then an
    # anomaly rising out of it
    ranking = np.concatenate([rng.normal(0, 1, 200), rng.normal(6, 1, 300), np.full(20, 12.0)])
    above = np.zeros(len(ranking), dtype=bool)
    noise = 200 + np.flatnonzero(rng.random(300) < 0.15)
    above[noise] = True
    above[500:] = True
    state = replace(new_state(), confirm=3.0)
    flags = above & exceeds(ranking, state.confirm)
    checked, _, reference = recent_checked(flags, ranking, above, state)
    np.testing.assert_array_equal(reference, recent_reference(ranking, above, [], SPAN, GAP)[0])
    late = noise[noise >= 200 + GAP + SPAN]  # the drift is the reference by then
    assert len(late) > 10 and checked[late].mean() < 0.25 and flags[late].all()
    assert checked[500:].all()
    # no check in a state without it, or without a ranking score
    for same, recent, none in (
        recent_checked(flags, ranking, above, replace(state, recent_span=0)),
        recent_checked(flags, None, above, state),
    ):
        np.testing.assert_array_equal(same, flags)
        assert recent == [] and none is None


def assert_kept_as_json(state: StreamState, name: str, kept: list[float], longest: int):
    """``state``, holding ``kept`` (NaN where a point is left out) as ``name``, goes
    through strict JSON and back; a stored list longer than ``longest``, or holding inf,
    text or a bool, is refused."""
    text = json.dumps(state.to_dict(), allow_nan=False)
    assert json.loads(text)[name].count(None) == int(np.isnan(kept).sum()) > 0
    loaded = StreamState.from_dict(json.loads(text))
    np.testing.assert_array_equal(getattr(loaded, name), kept)  # NaN where it was
    for bad in ([1.0] * (longest + 1), [float("inf")], ["1.0"], [True]):
        with pytest.raises(ArtifactError, match="stream state"):
            StreamState.from_dict({**state.to_dict(), name: bad})


def test_the_state_keeps_the_recent_scores_as_json():
    ranking, above = sample(3)
    _, recent = recent_reference(ranking, above, [], SPAN, GAP)
    state = replace(new_state(), recent=recent)
    assert_kept_as_json(state, "recent", recent, SPAN + GAP)
    with pytest.raises(ArtifactError, match="stream state"):
        StreamState.from_dict({**state.to_dict(), "recent_span": -1})


def assert_bounded(name: str, default: int, bad: tuple, too_many: dict):
    """Config parameter ``name``: ``default`` by default, 0 (no check) allowed, each of
    ``bad`` refused by name, and the config ``too_many`` refused for the points a stream
    would keep."""
    assert getattr(ModelConfig(), name) == default
    ModelConfig(**{name: 0})
    for value in bad:
        with pytest.raises(DataError, match=name):
            ModelConfig(**{name: value})
    with pytest.raises(DataError, match="a stream keeps at most"):
        ModelConfig(**too_many)


def test_the_recent_window_is_bounded_by_what_a_stream_keeps():
    assert_bounded("recent_windows", 5, (-1, 101, True), {"window": 512, "recent_windows": 15})
