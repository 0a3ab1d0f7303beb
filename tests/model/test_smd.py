"""SMD protocol pieces: interpretation labels, HitRate@P%, best F1, and a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.evaluation.smd import (
    best_f1,
    best_f1_threshold,
    evaluate_smd,
    event_hit_rate,
    hit_rate,
    point_adjusted_threshold,
    read_interpretation,
    reference_hit_rate,
)
from model.events import Event
from tests.conftest import TINY, make_synthetic


def test_read_interpretation_is_zero_based_columns(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("10-12:1,3\n20-20:2\n")
    assert read_interpretation(path) == [(10, 12, [0, 2]), (20, 20, [1])]


def test_hit_rate_counts_top_floor_p_of_g():
    contributions = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4]])
    segments = [(0, 1, [0, 3])]
    # 100%: top-2 per point; row 0 -> {0,1}: 1 of 2; row 1 -> {3,2}: 1 of 2
    assert hit_rate(contributions, segments, 100) == pytest.approx(0.5)
    # 150%: top-3; row 0 -> {0,1,2}: 1/2; row 1 -> {3,2,1}: 1/2
    assert hit_rate(contributions, segments, 150) == pytest.approx(0.5)
    assert hit_rate(contributions, [(0, 0, [0])], 100) == 1.0


def test_event_hit_rate_ranks_the_points_inside_events_by_their_event():
    events = [Event(1, 3, 2, np.array([0.6, 0.0, 0.4]))]
    shares = np.zeros((9, 3))
    shares[1:3, 1] = 1.0  # each step on its own blames variable 1
    # labelled points 1-4; only 1 and 2 are inside the event, and its top variable is 0
    assert event_hit_rate(events, shares, [(1, 4, [0])], 100) == (1.0, 0.0, 2)
    assert event_hit_rate(events, shares, [(1, 4, [1])], 150) == (0.0, 1.0, 2)
    assert np.isnan(event_hit_rate([], shares, [(1, 4, [1])], 150)[0])


# two labelled segments (1-3 and 5-7); the best point-adjusted F1 finds both at 0.6
LABELS = np.array([0, 1, 1, 1, 0, 1, 1, 1, 0])
SCORE = np.array([0.1, 0.65, 0.9, 0.3, 0.7, 0.6, 0.2, 0.1, 0.1])


def test_point_adjusted_threshold_reaches_the_segment_that_completes_the_best_f1():
    assert point_adjusted_threshold(SCORE, LABELS) == 0.6
    assert point_adjusted_threshold(LABELS.astype(float), LABELS) == 1.0


def interfusion_best_f1_threshold(score, labels):
    """InterFusion's get_best_f1 as published (lower = more anomalous), for comparison."""
    search, n, i = [], len(labels), 0
    while i < n:
        if labels[i]:
            j = i
            while j < n and labels[j]:
                j += 1
            search.append((score[i:j].min(), j - i, True))
            i = j
        else:
            search.append((score[i], 1, False))
            i += 1
    search.sort(key=lambda x: x[0])
    best, threshold, flagged, found, total = -1, None, 0, 0, labels.sum()
    for value, count, anomalous in search:
        flagged += count
        found += count if anomalous else 0
        precision, recall = found / (flagged + 1e-5), found / (total + 1e-5)
        f1 = 2 * precision * recall / (precision + recall + 1e-5)
        if f1 > best:
            best, threshold = f1, value
    return threshold


def test_point_adjusted_threshold_breaks_ties_as_interfusion_does():
    rng = np.random.default_rng(0)
    for _ in range(300):
        labels = (rng.random(40) < 0.25).astype(int)
        if not labels.any():
            continue
        score = np.round(rng.random(40), 1)  # many ties
        assert point_adjusted_threshold(score, labels) == -interfusion_best_f1_threshold(
            -score, labels
        )


def test_reference_hit_rate_ranks_a_segment_by_its_detected_points_worst_steps():
    log_prob = np.zeros((9, 3))
    log_prob[1, 0], log_prob[2, 2] = -3.0, -2.0  # detected points 1 and 2: variables 0, 2
    log_prob[3, 1] = -10.0  # point 3 is not detected (0.3 < 0.6): it does not count
    log_prob[5, 1] = -1.0  # the second segment's one detected point blames variable 1
    segments = [(1, 3, [2, 0]), (5, 7, [0])]
    rate, points = reference_hit_rate(log_prob, np.zeros(3), SCORE, LABELS, segments, 100)
    # segment 1: min over points 1-2 = (-3, 0, -2): top-2 {0, 2} hits both, counted twice;
    # segment 2: top-1 {1} misses variable 0, counted once
    assert points == 3 and rate == pytest.approx(2 / 3)
    # per point, point 1 alone would rank only variable 0 first among {0, 2}: 0.5
    assert hit_rate(-log_prob, [(1, 1, [2, 0])], 100) == 0.5


def test_best_f1_of_a_perfect_score_is_one():
    labels = np.array([0, 0, 1, 1, 0])
    assert best_f1(labels.astype(float), labels) == pytest.approx(1.0)
    assert best_f1(np.array([1.0, 1, 0, 0, 1]), labels) < 1.0


def test_best_f1_threshold_flags_exactly_the_best_f1_points():
    labels = np.array([0, 1, 1, 0, 0, 1])
    score = np.array([0.1, 0.9, 0.7, 0.8, 0.2, 0.3])
    f1, threshold = best_f1_threshold(score, labels)
    assert threshold == 0.3  # flags 0.9, 0.8, 0.7, 0.3: all 3 found, 3 of 4 right
    assert f1 == pytest.approx(6 / 7) == best_f1(score, labels)


def test_end_to_end_on_a_small_smd_layout(tmp_path):
    data = make_synthetic(n_train=800, n_test=600)
    for part in ("train", "test", "labels", "interpretation_label"):
        (tmp_path / part).mkdir()
    np.save(tmp_path / "train" / "m-1.npy", data.train.astype(np.float32))
    np.save(tmp_path / "test" / "m-1.npy", data.test.astype(np.float32))
    np.save(tmp_path / "labels" / "m-1.npy", data.labels)
    lines = [f"{s}-{e - 1}:{v + 1}" for s, e, v in data.injected.values()]
    (tmp_path / "interpretation_label" / "m-1.txt").write_text("\n".join(lines))
    table = evaluate_smd(tmp_path, tmp_path / "out", TINY)
    row = table.iloc[0]
    assert row["auc_pr"] > 0.5 and row["best_f1"] > 0.5
    assert row["hitrate@100"] > 0.7
    assert row["event_hitrate@100"] > 0.7 and row["event_step_hitrate@100"] > 0.7
    assert row["event_points"] > 0
    assert row["ref_hitrate@100"] > 0.7 and row["ref_points"] > 0
    # the test part streamed after the training part: both injected anomalies alert,
    # few normal rows are flagged, and every test row has its stream columns
    flags = pd.read_csv(tmp_path / "out" / "smd-flags.csv").iloc[0]
    assert flags["machine"] == "m-1" and flags["events"] == 2
    assert flags["events_alerted"] == 2
    assert flags["normal_flagged"] < 0.05
    assert flags["normal_points"] == int((data.labels == 0).sum())
    rows = pd.read_csv(tmp_path / "out" / "m-1.csv")
    assert len(rows) == len(data.test)
    assert set(rows.columns) == {"score", "alarm_score", "is_anomaly", "severity", "limit"}
    assert rows["is_anomaly"].to_numpy()[data.labels == 1].any()
