"""Flag and alert measures on small series whose answers are counted by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.evaluation.alarm_quality import (
    alert_counts,
    alert_starts,
    best_f1_threshold,
    event_recall,
    flag_quality,
    point_f1,
    summarize,
)


def series(length: int, ones: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros(length, dtype=int)
    for start, end in ones:
        out[start:end] = 1
    return out


# 100 points; labelled events at [20, 30) and [60, 65)
LABELS = series(100, [(20, 30), (60, 65)])


def test_alerts_are_run_starts_merged_across_short_gaps():
    flags = series(100, [(10, 12), (14, 15), (40, 41), (50, 52)])
    np.testing.assert_array_equal(alert_starts(flags, max_gap=2), [10, 40, 50])
    np.testing.assert_array_equal(alert_starts(flags, max_gap=0), [10, 14, 40, 50])
    np.testing.assert_array_equal(alert_starts(flags, max_gap=10), [10, 40])


def test_false_alerts_and_events_reached_count_one_window_around_events():
    # alerts at 12 (within 8 before event 1: reaches it), 25 (inside event 1), 45 (far from
    # both: false), 66 (one step after event 2: not false, reaches nothing), 90 (false)
    flags = series(100, [(12, 13), (25, 26), (45, 46), (66, 67), (90, 92)])
    false_alerts, reached, events = alert_counts(flags, LABELS, reach=8, max_gap=0)
    assert (false_alerts, reached, events) == (2, 1, 2)
    # with a reach of 2, the alert at 12 is false and reaches nothing
    assert alert_counts(flags, LABELS, reach=2, max_gap=0) == (3, 1, 2)


def test_an_alert_started_long_before_an_event_does_not_reach_it():
    flags = series(100, [(0, 35)])  # one run from the start, through event 1
    assert alert_counts(flags, LABELS, reach=8, max_gap=0) == (1, 0, 2)
    assert event_recall(flags, LABELS) == (1, 2)  # its points still flag event 1


def test_point_f1_and_the_best_f1_of_a_score():
    flags = series(100, [(20, 25), (70, 75)])  # 5 of 15 labelled, 5 false
    assert point_f1(flags, LABELS) == pytest.approx(2 * 5 / (10 + 15))
    assert point_f1(np.zeros(100), LABELS) == 0.0
    score = LABELS * 2.0 + 0.1
    score[50] = 5.0  # one normal point above every labelled point
    f1, threshold = best_f1_threshold(score, LABELS)
    assert f1 == pytest.approx(2 * 15 / (16 + 15)) and threshold == pytest.approx(2.1)
    score[22] = np.nan  # NaN (causal warm-up) ranks lowest
    assert best_f1_threshold(score, LABELS)[0] == pytest.approx(2 * 14 / (15 + 15))


def test_flag_quality_of_one_part():
    flags = series(100, [(12, 13), (25, 28), (45, 46)])  # 4 normal of 85 flagged
    quality = flag_quality(LABELS + 0.0, flags, LABELS, reach=8, max_gap=0)
    assert quality["normal_flagged"] == pytest.approx(2 / 85)
    assert quality["point_f1"] == pytest.approx(2 * 3 / (5 + 15))
    assert quality["best_f1"] == pytest.approx(1.0)
    assert quality["f1_ratio"] == pytest.approx(0.3)
    assert quality["event_recall"] == 0.5
    assert quality["false_alerts"] == pytest.approx(10_000 * 1 / 85)
    assert quality["alert_recall"] == 0.5
    assert quality["alerts"] == 3


def test_the_best_f1_is_the_better_of_the_alarm_and_the_ranking_score():
    flags = series(100, [(25, 28)])
    alarm = series(100, [(20, 25), (70, 80)]) + 0.0  # at best 5 of 15 with 10 normal: F1 1/3
    ranking = series(100, [(20, 30)]) + 0.0  # the first event exactly: F1 2 x 10 / 25
    alone = flag_quality(alarm, flags, LABELS, reach=8, max_gap=0)
    both = flag_quality(alarm, flags, LABELS, reach=8, max_gap=0, ranking=ranking)
    assert alone["best_f1"] == pytest.approx(1 / 3)
    assert both["best_f1"] == pytest.approx(0.8)
    assert both["f1_ratio"] == pytest.approx(2 * 3 / (3 + 15) / 0.8)
    assert both["point_f1"] == alone["point_f1"] and both["alerts"] == alone["alerts"]


def test_summaries_pool_alerts_and_take_mean_and_median_of_flagged_shares():
    rows = [
        {"normal_flagged": v, "point_f1": f, "best_f1": 0.8, "events": e,
         "events_flagged": e - 1, "events_alerted": 1, "false_alert_count": c,
         "normal_points": n, "set": s}
        for v, f, e, c, n, s in [
            (0.01, 0.4, 2, 1, 10_000, "A"),
            (0.03, 0.6, 1, 3, 30_000, "A"),
            (0.50, 0.2, 3, 0, 5_000, "A"),
            (0.00, 0.0, 1, 2, 10_000, "B"),
        ]
    ]  # fmt: skip
    table = summarize(pd.DataFrame(rows), "set").set_index("set")
    a = table.loc["A"]
    assert a["files"] == 3 and a["events"] == 6
    assert a["normal_flagged"] == pytest.approx(0.18)
    assert a["normal_flagged_median"] == pytest.approx(0.03)
    assert a["f1_ratio"] == pytest.approx(0.4 / 0.8)
    assert a["event_recall"] == pytest.approx(3 / 6)
    assert a["alert_recall"] == pytest.approx(3 / 6)
    assert a["false_alerts"] == pytest.approx(10_000 * 4 / 45_000)
    assert table.loc["B", "false_alerts"] == pytest.approx(2.0)


def test_severity_calibration_counts_normal_points_only():
    severity = np.full(100, 0.5)
    severity[[1, 2, 3]] = 0.995  # normal: above 0.99 only
    severity[4] = 0.9995  # normal: above both
    severity[20:30] = 1.0  # labelled: not counted
    severity[5] = np.nan  # not scored: counted as not severe
    quality = flag_quality(severity, severity > 0.99, LABELS, reach=8, max_gap=0, severity=severity)
    assert quality["severity_99"] == pytest.approx(4 / 85)
    assert quality["severity_999"] == pytest.approx(1 / 85)
    assert "severity_99" not in flag_quality(severity, severity > 0.99, LABELS, 8, 0)


def test_summaries_pool_severity_and_count_regime_changes_and_drift():
    base = {"normal_flagged": 0.0, "point_f1": 0.5, "best_f1": 0.5, "events": 1,
            "events_flagged": 1, "events_alerted": 1, "false_alert_count": 0}  # fmt: skip
    rows = [
        {**base, "severity_99": 0.01, "normal_points": 10_000, "rebaselines": 2, "drifting": 1.0},
        {**base, "severity_99": 0.03, "normal_points": 30_000, "rebaselines": 1, "drifting": 0.0},
    ]
    (row,) = summarize(pd.DataFrame(rows), None).to_dict("records")
    assert row["severity_99"] == pytest.approx(0.025)
    assert row["rebaselines"] == 3 and row["drifting"] == 1
