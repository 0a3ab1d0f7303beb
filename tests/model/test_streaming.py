"""A threshold for causal scoring, fitted on causal scores of normal data."""

from __future__ import annotations

import numpy as np

from model.streaming import causal_threshold, validation_tail


def test_causal_scores_need_their_own_threshold(detector, synthetic):
    normal = synthetic.test[:195]  # after the training data, before the first anomaly
    causal = detector.score(normal, causal=True).alarm_score[detector.window - 1 :]
    stored = (causal > detector.threshold.value).mean()
    threshold = causal_threshold(detector, validation_tail(synthetic.train, detector))
    own = (causal > threshold.value).mean()
    assert threshold.value > detector.threshold.value
    assert stored > 0.05, "the stored threshold, fitted on centred scores, flags causal ones"
    assert own < 0.02
    shifted = synthetic.test[380:460]  # the level shift starts at row 400
    flags = detector.score(shifted, causal=True).alarm_score > threshold.value
    assert flags[20:30].any()


def test_validation_tail_is_the_held_out_part_with_a_window_of_context(detector, synthetic):
    tail = validation_tail(synthetic.train, detector)
    held_out = int(round(len(synthetic.train) * detector.config.val_fraction))
    assert len(tail) == held_out + detector.window - 1
    np.testing.assert_array_equal(tail[-1], synthetic.train[-1])
