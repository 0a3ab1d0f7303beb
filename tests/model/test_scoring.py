"""Scoring helpers and the network's likelihood pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.engine import TorchEngine
from model.errors import DataError
from model.events import anomaly_events, batch_events, find_events
from model.network import (
    LSTMVAE,
    elbo_loss,
    fixed_noise,
    flops_per_window,
    gaussian_log_prob,
    kl_divergence,
    reconstruction_log_prob,
)
from model.scoring import (
    contributions,
    score_series,
    step_scores,
    top_variables,
    window_starts,
)
from model.train import kl_weight


def test_window_starts_cover_the_end():
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert window_starts(11, 4, 3).tolist() == [0, 3, 6, 7]
    with pytest.raises(DataError, match="at least 4"):
        window_starts(3, 4, 1)


def test_step_score_adds_up_to_negative_elbo():
    log_prob = np.array([[-1.0, -2.0], [-0.5, 0.5]])  # (T=2, D=2)
    kl = np.array([4.0, 4.0])
    scores = step_scores(log_prob, kl, window=2)
    np.testing.assert_allclose(scores, [3.0 + 2.0, 0.0 + 2.0])
    assert scores.sum() == pytest.approx(-log_prob.sum() + 4.0)


def test_contributions_are_shares_of_excess():
    log_prob = np.array([[-3.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    shares = contributions(log_prob, baseline=np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(shares[0], [2 / 3, 0.0, 1 / 3])
    np.testing.assert_allclose(shares[1], [0.0, 0.0, 1.0])
    assert top_variables(shares, 2)[0].tolist() == [0, 2]


def test_find_events_merges_close_runs():
    flags = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert find_events(flags) == [(1, 3), (5, 6), (10, 11)]
    assert find_events(flags, max_gap=2) == [(1, 6), (10, 11)]
    assert find_events(np.zeros(4, dtype=bool)) == []


def test_an_event_is_ranked_by_each_variable_s_worst_step():
    # variable 0 is far off for one step; variable 1 a little off throughout the run
    log_prob = np.full((9, 3), -1.0)
    log_prob[1:6, 1] = -2.0
    log_prob[3, 0] = -5.0
    log_prob[0, :] = np.nan  # a warm-up step without scores
    flags = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
    alarm = np.array([np.nan, 3.0, 2.0, 4.0, 5.0, 1.0, 0.0, 0.0, 2.0])
    events = anomaly_events(flags, alarm, log_prob, np.ones(3), max_gap=1)
    assert [(e.start, e.end, e.peak) for e in events] == [(1, 6, 4), (8, 9, 8)]
    # worst steps: variable 0 excess 4, variable 1 excess 1: shares 0.8 and 0.2
    np.testing.assert_allclose(events[0].contributions, [0.8, 0.2, 0.0])
    np.testing.assert_allclose(events[1].contributions, [0.0, 0.0, 0.0])  # nothing in excess
    # per step, variable 1 leads on four of the event's five steps
    per_step = contributions(log_prob[1:6], np.ones(3))
    assert (top_variables(per_step, 1)[:, 0] == 1).sum() == 4
    assert anomaly_events(np.zeros(9, bool), alarm, log_prob, np.ones(3), max_gap=1) == []


def test_an_event_s_peak_is_flagged_and_infinite_surprise_is_shared():
    flags = np.array([1, 0, 1], dtype=bool)
    alarm = np.array([2.0, np.inf, 3.0])  # the gap step is not flagged
    log_prob = np.array([[-1.0, -2.0], [-np.inf, -1.0], [-1.0, -5.0]])
    (event,) = anomaly_events(flags, alarm, log_prob, np.zeros(2), max_gap=1)
    assert (event.start, event.end, event.peak) == (0, 3, 2)
    np.testing.assert_allclose(event.contributions, [1.0, 0.0])  # variable 0's -inf
    np.testing.assert_allclose(contributions(log_prob, np.zeros(2))[1], [1.0, 0.0])


def test_batch_events_are_each_row_s_events():
    rng = np.random.default_rng(0)
    flags = rng.random((40, 32)) < 0.2
    flags[3] = False  # a row without events
    alarm = rng.normal(size=(40, 32))
    log_prob = -rng.exponential(size=(40, 32, 5))
    baseline = np.full(5, 0.5)
    batch = batch_events(flags, alarm, log_prob, baseline, max_gap=2)
    assert batch[3] == []
    for row, events in enumerate(batch):
        one = anomaly_events(flags[row], alarm[row], log_prob[row], baseline, max_gap=2)
        assert [(e.start, e.end) for e in events] == find_events(flags[row], max_gap=2)
        assert [(e.start, e.end, e.peak) for e in events] == [(e.start, e.end, e.peak) for e in one]
        for event in events:
            flagged_alarm = np.where(flags[row], alarm[row], -np.inf)[event.start : event.end]
            assert event.peak == event.start + np.argmax(flagged_alarm)
            worst = log_prob[row, event.start : event.end].min(axis=0)
            np.testing.assert_allclose(event.contributions, contributions(worst, baseline))


def test_gaussian_log_prob_matches_closed_form():
    x, mean, std = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    expected = -0.5 * math.log(2 * math.pi) - math.log(2.0) - 0.125
    assert gaussian_log_prob(x, mean, std).item() == pytest.approx(expected)


def test_kl_is_zero_only_at_the_prior():
    assert kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3)).sum().item() == 0.0
    assert kl_divergence(torch.ones(1, 3), torch.zeros(1, 3)).sum().item() == pytest.approx(1.5)


def test_free_bits_floor_the_penalised_kl():
    x = torch.zeros(2, 8, 1)
    mean, std = torch.zeros_like(x), torch.ones_like(x)
    mu, logvar = torch.zeros(2, 4), torch.zeros(2, 4)  # KL exactly 0
    loss, nll, kl = elbo_loss(x, mean, std, mu, logvar, beta=1.0, free_bits=0.5)
    assert kl.item() == 0.0
    assert loss.item() == pytest.approx(nll.item() + 4 * 0.5)


def test_decoder_std_has_a_floor():
    config = ModelConfig(window=8, hidden_size=4, latent_dim=2, min_std=0.2)
    net = LSTMVAE(3, config)
    with torch.no_grad():
        net.to_output.bias.fill_(-50.0)  # push the raw std far negative
        _, std = net.decode(torch.zeros(5, 2), 8)
    assert std.shape == (5, 8, 3)
    assert std.min().item() >= 0.2


def test_kl_warm_up_is_linear_to_beta():
    config = ModelConfig(beta=2.0, kl_warmup_epochs=4)
    assert [kl_weight(config, e) for e in (1, 2, 4, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert kl_weight(config.replace(kl_warmup_epochs=0), 1) == 2.0


def test_an_infinity_makes_only_the_means_over_it_infinite():
    from model.scoring import moving_average

    x = np.arange(10.0)
    x[4] = np.inf
    for causal, over in ((False, [3, 4, 5]), (True, [4, 5, 6])):
        mean = moving_average(x, 3, causal)
        assert np.isposinf(mean[over]).all()
        finite = np.setdiff1d(np.arange(10), over)
        plain = moving_average(np.where(np.isinf(x), 0.0, x), 3, causal)
        np.testing.assert_allclose(mean[finite], plain[finite])
    x[7] = -np.inf  # both signs in one window: NaN, their sum
    assert np.isnan(moving_average(x, 4, causal=True)[7])


def test_moving_average_centred_trailing_and_nan():
    from model.scoring import moving_average

    x = np.arange(6.0)
    np.testing.assert_allclose(moving_average(x, 3, causal=False), [1 / 3, 1, 2, 3, 4, 14 / 3])
    np.testing.assert_allclose(moving_average(x, 3, causal=True), [0, 1 / 3, 1, 2, 3, 4])
    warm = np.array([np.nan, np.nan, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(moving_average(warm, 2, causal=True), [np.nan, np.nan, 1, 1.5, 2.5])
    assert moving_average(x, 1, causal=False) is x
    rows = np.arange(12.0).reshape(2, 6)
    np.testing.assert_allclose(
        moving_average(rows, 3, False, axis=1)[1], x + 6 + [1 / 3, 0, 0, 0, 0, -1 / 3]
    )


def test_multiscale_average_is_the_mean_of_three_widths():
    from model.scoring import moving_average, multiscale_average

    x = np.random.default_rng(0).normal(size=200)
    for causal in (False, True):
        widths = [moving_average(x, w, causal) for w in (16, 32, 64)]
        np.testing.assert_allclose(multiscale_average(x, 32, causal), np.mean(widths, axis=0))
    assert multiscale_average(x, 1, causal=False) is x
    # trailing: a later change leaves every earlier point as it was
    later = x.copy()
    later[150:] += 10.0
    before, after = multiscale_average(x, 32, True), multiscale_average(later, 32, True)
    np.testing.assert_array_equal(before[:150], after[:150])
    assert (after[150:] > before[150:]).all()


def test_smoothing_is_part_of_the_config(detector, synthetic):
    """The ranking score is the step score (``smooth_window=1``) through the three-width
    kernel, in series and causal mode; the alarm keeps max(step score, its average over
    T)."""
    from model.detector import Detector
    from model.scoring import moving_average, multiscale_average

    window = detector.window
    assert detector.config.smoothing == window  # one window by default
    config = detector.config.replace(smooth_window=1)
    assert config.smoothing == 1
    parts = (
        detector.feature_names,
        detector.normalizer,
        detector.threshold,
        detector.baseline,
        detector.metadata,
    )
    plain = Detector(detector.net, config, *parts, levels=detector.levels)
    for causal in (False, True):
        smoothed = detector.score(synthetic.test, causal=causal)
        steps = plain.score(synthetic.test, causal=causal)
        kernel = multiscale_average(steps.score, window, causal)
        np.testing.assert_allclose(smoothed.score, kernel, rtol=1e-9, equal_nan=True)
        alarm = np.fmax(steps.alarm_score, moving_average(steps.alarm_score, window, causal))
        np.testing.assert_allclose(smoothed.alarm_score, alarm, rtol=1e-9, equal_nan=True)
    assert np.diff(smoothed.score[window:]).std() < np.diff(steps.score[window:]).std()


def test_windows_rank_as_each_window_scored_alone(detector, synthetic):
    window = detector.window
    windows = np.stack([synthetic.test[i : i + window] for i in (0, 190, 400)])
    batch = detector.score_windows(windows)
    alone = [detector.score(w) for w in windows]
    np.testing.assert_allclose(batch.score, [one.score for one in alone], rtol=1e-9)
    np.testing.assert_allclose(batch.alarm_score, [one.alarm_score for one in alone], rtol=1e-9)


def test_flops_per_window_counts_the_architecture():
    config = ModelConfig()  # T 32, H 64, Z 8, one layer
    encoder = 32 * 2 * 4 * 64 * (6 + 64) + 2 * 64 * 16
    per_sample = 2 * 8 * 128 + 32 * (2 * 4 * 64 * (8 + 64) + 2 * 64 * 12)
    assert flops_per_window(6, config, samples=10) == encoder + 10 * per_sample == 13_457_408
    two = config.replace(num_layers=2)
    extra_layer = 32 * 2 * 4 * 64 * (64 + 64)
    assert flops_per_window(6, two, 1) - flops_per_window(6, config, 1) == (
        2 * extra_layer + 2 * 8 * 128
    )


@pytest.mark.parametrize("decode_rows", [1, 7, 10_000])
def test_chunked_scoring_matches_the_straightforward_computation(decode_rows):
    torch.manual_seed(0)
    net = LSTMVAE(3, ModelConfig(window=8, hidden_size=16, latent_dim=4)).eval()
    x = torch.randn(13, 8, 3)  # (N, T, D)
    noise = fixed_noise(5, 4, seed=1)  # (L, Z)
    with torch.no_grad():  # every sample of every window decoded in one call
        mu, logvar = net.encode(x)
        z = mu.unsqueeze(0) + noise.unsqueeze(1) * torch.exp(0.5 * logvar).unsqueeze(0)
        mean, std = net.decode(z.reshape(5 * 13, -1), 8)
        expected = gaussian_log_prob(x, mean.view(5, 13, 8, 3), std.view(5, 13, 8, 3)).mean(0)
    log_prob, kl = reconstruction_log_prob(net, x, noise, decode_rows=decode_rows)
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl, kl_divergence(mu, logvar).sum(-1))


def test_series_scores_are_means_over_the_covering_windows():
    torch.manual_seed(0)
    net = LSTMVAE(2, ModelConfig(window=8, hidden_size=8, latent_dim=2)).eval()
    values = np.random.default_rng(0).standard_normal((30, 2))
    noise = fixed_noise(3, 2, seed=1)
    starts = window_starts(30, 8, stride=3)  # 0, 3, ..., 21 and the last, 22
    windows = torch.from_numpy(np.stack([values[s : s + 8] for s in starts]).astype(np.float32))
    log_prob, kl = (t.numpy() for t in reconstruction_log_prob(net, windows, noise))
    expected, expected_kl, covering = np.zeros((30, 2)), np.zeros(30), np.zeros(30)
    for i, s in enumerate(starts):
        expected[s : s + 8] += log_prob[i]
        expected_kl[s : s + 8] += kl[i]
        covering[s : s + 8] += 1
    scores = score_series(TorchEngine(net, noise), values, stride=3, batch_size=4)
    np.testing.assert_allclose(scores.log_prob, expected / covering[:, None], rtol=1e-5)
    np.testing.assert_allclose(scores.kl, expected_kl / covering, rtol=1e-5)
    assert scores.kl[29] == pytest.approx(kl[-1], rel=1e-5)  # only the last window covers it
