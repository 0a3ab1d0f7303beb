"""The trained detector: finds anomalies, attributes them, is deterministic."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.config import ModelConfig
from model.detector import Detector
from model.errors import FeatureMismatchError, TrainingError
from model.threshold import exceeds
from tests.conftest import FEATURES, TINY


def test_finds_injected_anomalies(detector, synthetic):
    scored = detector.score(synthetic.test)
    assert roc_auc_score(synthetic.labels, scored.score) > 0.95
    for start, end, _ in synthetic.injected.values():
        assert scored.is_anomaly[start:end].any(), f"rows {start}-{end} not flagged"
    # few false alarms on normal rows more than a window away from an anomaly
    # (scores are smoothed over a window, so an anomaly's neighbours rise with it)
    near = np.convolve(synthetic.labels, np.ones(2 * detector.window + 1), mode="same") > 0
    assert scored.is_anomaly[~near].mean() < 0.02


def test_one_step_spike_is_flagged_though_the_smoothed_score_hides_it(detector, synthetic):
    values = synthetic.test.copy()
    values[100, 0] += 3.0  # one step of alpha, far from the injected anomalies
    scored, clean = detector.score(values), detector.score(synthetic.test)
    assert scored.is_anomaly[100] and not clean.is_anomaly[100]
    assert scored.score[100] < scored.threshold < scored.alarm_score[100]
    # the spike flags its own step only: beyond the ranking score's reach (2T) and the
    # half window the lone check looks back, the flags are those of the clean series
    reach = 2 * detector.window + detector.window // 2
    for part in (slice(20, 100 - reach), slice(100 + reach + 1, 180)):
        np.testing.assert_array_equal(scored.is_anomaly[part], clean.is_anomaly[part])
    assert scored.top(1)[100, 0] == 0


def test_a_marginal_lone_spike_is_not_confirmed_by_the_ranking_score(detector, synthetic):
    values = synthetic.test.copy()
    values[100, 0] += 1.5  # just above the limit, in a quiet stretch
    scored = detector.score(values)
    confirm = detector.stream_state().confirm
    assert scored.threshold < scored.alarm_score[100] and scored.score[100] < confirm
    assert not scored.is_anomaly[100]
    # the same model without the check flags it, and a stream decides alike
    unchecked = copy.copy(detector)
    unchecked.streams = {
        k: replace(v, confirm=None, recent_span=0, lone=None) for k, v in detector.streams.items()
    }
    assert unchecked.score(values).is_anomaly[100]
    streamed, _ = detector.score_stream(values, detector.stream_state())
    assert streamed.alarm_score[100] > streamed.limit[100] and not streamed.is_anomaly[100]
    assert unchecked.score_stream(values, unchecked.stream_state())[0].is_anomaly[100]


def test_causal_scores_are_confirmed_against_the_causal_level(detector, synthetic):
    plain = copy.copy(detector)  # the other checks off: tested on their own
    off = {"recent_span": 0, "season_period": 0, "season_half": 0, "lone": None}
    plain.streams = {k: replace(v, **off) for k, v in detector.streams.items()}
    scored = plain.score(synthetic.test, causal=True, context=synthetic.train[-64:])
    levels = {causal: detector.stream_state(causal).confirm for causal in (False, True)}
    assert levels[False] != levels[True]  # one per kind of stream
    above = scored.alarm_score > scored.threshold
    expected = above & exceeds(scored.score, levels[True])
    np.testing.assert_array_equal(scored.is_anomaly, expected)
    # points that the other level would decide the other way
    between = above & (scored.score > min(levels.values())) & (scored.score <= max(levels.values()))
    assert between.any()


@pytest.mark.parametrize("causal", [False, True])
def test_a_value_beyond_float32_is_flagged_and_the_points_after_it_are_scored(
    detector, synthetic, causal
):
    values = synthetic.test.copy()
    values[100, 0] = 1e300  # log p = -inf: an infinite score
    history = synthetic.train[-64:]
    scored = detector.score(values, causal=causal, context=history)
    clean = detector.score(synthetic.test, causal=causal, context=history)
    assert np.isinf(scored.alarm_score[100]) and scored.is_anomaly[100]
    # past the reach of its windows and averages, the series scores as without it, and
    # past the recent and seasonal checks' memory it is flagged alike
    reach = 100 + detector.context_points(causal) + detector.window
    np.testing.assert_allclose(scored.score[reach:], clean.score[reach:], rtol=1e-9)
    state = detector.stream_state(causal)
    memory = max(state.recent_span + state.recent_gap, state.season_period + state.season_half)
    later = slice(reach + memory, None)
    assert len(scored.score[later]) > 100
    np.testing.assert_array_equal(scored.is_anomaly[later], clean.is_anomaly[later])


def test_attribution_points_at_injected_variable(detector, synthetic):
    scored = detector.score(synthetic.test)
    for start, end, variable in synthetic.injected.values():
        top1 = scored.top(1)[start:end, 0]
        assert np.mean(top1 == variable) >= 0.75
        shares = scored.contributions[start:end]
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-9)


def test_score_is_deterministic(detector, synthetic):
    first = detector.score(synthetic.test)
    second = detector.score(synthetic.test)
    np.testing.assert_array_equal(first.score, second.score)


def test_training_is_reproducible(synthetic):
    config = TINY.replace(epochs=2)
    a = Detector.fit(synthetic.train, config)
    b = Detector.fit(synthetic.train, config)
    for name, tensor in a.net.state_dict().items():
        assert tensor.equal(b.net.state_dict()[name]), name


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_window_score_does_not_depend_on_batch(detector, synthetic, name):
    import torch

    from model.engine import make_engine

    engine = make_engine(detector.net, detector.noise, name)
    assert engine.name == name
    values = torch.from_numpy(detector.normalize(synthetic.test[:200]))
    batch = values.unfold(0, detector.window, 7).transpose(1, 2)  # (N, T, D)
    together, kl_together = engine(batch)
    alone, kl_alone = engine(batch[5:6])
    np.testing.assert_allclose(together[5].numpy(), alone[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kl_together[5].item(), kl_alone[0].item(), rtol=1e-5)


def test_warm_up_flags_first_window_minus_one(detector, synthetic):
    scored = detector.score(synthetic.test)
    assert scored.warm_up[: detector.window - 1].all()
    assert not scored.warm_up[detector.window - 1 :].any()
    assert np.isfinite(scored.score[scored.warm_up]).all()  # flagged, still scored


def test_stride_changes_coverage_not_length(detector, synthetic):
    dense = detector.score(synthetic.test, stride=1)
    sparse = detector.score(synthetic.test, stride=5)
    assert sparse.score.shape == dense.score.shape
    assert np.isfinite(sparse.score).all()
    assert not np.allclose(sparse.score, dense.score)


def test_causal_scores_ignore_the_future(detector, synthetic):
    changed = synthetic.test.copy()
    changed[300:] += 5.0
    before = detector.score(synthetic.test, causal=True)
    after = detector.score(changed, causal=True)
    np.testing.assert_array_equal(before.score[:300], after.score[:300])
    assert np.isnan(before.score[: detector.window - 1]).all()
    assert not np.allclose(before.score[300:], after.score[300:])


def test_severity_is_calibrated_probability(detector, synthetic):
    scored = detector.score(synthetic.test)
    assert ((scored.severity >= 0) & (scored.severity <= 1)).all()
    order = np.argsort(scored.alarm_score)
    assert (np.diff(scored.severity[order]) >= -1e-12).all()
    assert scored.severity[scored.is_anomaly].min() >= 1 - 10 * detector.config.risk


def test_wrong_number_of_variables_is_refused(detector, synthetic):
    with pytest.raises(FeatureMismatchError, match="expected 4 variables"):
        detector.score(synthetic.test[:, :3])


def test_too_little_training_data_is_refused():
    with pytest.raises(TrainingError, match="too little data"):
        Detector.fit(np.zeros((20, 2)), ModelConfig(window=16, epochs=1))


def test_constant_column_trains_and_scores(synthetic):
    values = synthetic.train[:400].copy()
    values[:, 2] = 7.0
    detector = Detector.fit(values, TINY.replace(epochs=1))
    scored = detector.score(values)
    assert np.isfinite(scored.score).all()


@pytest.mark.parametrize(("features", "window"), [(1, 8), (300, 8)])
def test_dimension_range(features, window):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((80, features))
    config = ModelConfig(window=window, hidden_size=8, latent_dim=2, epochs=1)
    detector = Detector.fit(values, config)
    scored = detector.score(values)
    assert scored.log_prob.shape == (80, features)
    assert np.isfinite(scored.score).all()


def test_feature_names_and_metadata(detector):
    assert detector.feature_names == FEATURES
    meta = detector.metadata
    assert meta["epochs_run"] == len(meta["history"]) >= 1
    assert len(meta["data_fingerprint"]) == 64
    assert meta["versions"]["torch"].startswith("2.13")
