"""SMD protocol pieces: interpretation labels, HitRate@P%, best F1, and a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest

from model.smd import best_f1, evaluate_smd, hit_rate, read_interpretation
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


def test_best_f1_of_a_perfect_score_is_one():
    labels = np.array([0, 0, 1, 1, 0])
    assert best_f1(labels.astype(float), labels) == pytest.approx(1.0)
    assert best_f1(np.array([1.0, 1, 0, 0, 1]), labels) < 1.0


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
