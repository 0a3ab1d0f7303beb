"""lvad evaluate on a directory of TSB-AD-format files made here."""

from __future__ import annotations

import pandas as pd
import pytest

from app.cli import main
from model.errors import DataError
from model.evaluation.evaluate import run_evaluation, tsbad_files
from tests.conftest import TINY, make_synthetic


@pytest.fixture(scope="module")
def tsbad_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tsbad")
    names = []
    for i, seed in enumerate((0, 1), start=1):
        data = make_synthetic(seed=seed, n_train=500, n_test=600)
        values = pd.concat([pd.DataFrame(data.train), pd.DataFrame(data.test)], ignore_index=True)
        values.columns = [f"v{c}" for c in values.columns]
        values["Label"] = [0] * 500 + data.labels.tolist()
        name = f"00{i}_Synth_id_{i}_Test_tr_500_1st_700.csv"
        values.to_csv(root / name, index=False)
        names.append(name)
    pd.DataFrame({"file": names, "OmniAnomaly": [0.1, 0.2], "KMeansAD": [0.3, 0.4]}).to_csv(
        root / "published_vus_pr.csv", index=False
    )
    (root / "notes.csv").write_text("not,a,benchmark\n")  # ignored: wrong name pattern
    return root


def test_writes_one_score_per_row_and_a_table(tsbad_dir, tmp_path, capsys):
    table = run_evaluation(tsbad_dir, tmp_path, config=TINY)
    unconfirmed = 0
    for name in table["file"]:
        scores = pd.read_csv(tmp_path / name)
        assert list(scores.columns) == ["score", "alarm_score", "is_anomaly", "severity", "limit"]
        assert len(scores) == 1100 and scores["score"].notna().all()
        # the flags are the stream's, after the 500 training rows
        training, streamed = scores[:500], scores[500:]
        assert training["alarm_score"].isna().all() and (training["is_anomaly"] == 0).all()
        assert streamed["alarm_score"].notna().all() and streamed["severity"].between(0, 1).all()
        # flags: above the limit, and checked by the ranking score against the
        # confirmation level and the stream's own past (exactly: tests/model), or
        # carried on right after such a flag; the lowest-ranked points above the limit
        # are among those left unflagged
        above = (streamed["alarm_score"] > streamed["limit"]).to_numpy()
        flags, ranking = streamed["is_anomaly"].to_numpy() == 1, streamed["score"].to_numpy()
        assert flags.any() and not (flags[1:] & ~above[1:] & ~flags[:-1]).any()
        dropped = above & ~flags
        assert not dropped.any() or ranking[dropped].min() < ranking[flags & above].min()
        unconfirmed += int(dropped.sum())
    assert unconfirmed > 0  # the check did leave points above the limit unflagged
    assert table["normal_flagged"].between(0, 0.2).all()
    assert (table["events"] == 2).all()  # the spike and the level shift
    assert table["event_recall"].between(0.5, 1).all()  # the shift is flagged at least
    assert (table["point_f1"] <= table["best_f1"]).all() and table["best_f1"].min() > 0.3
    assert table["alert_recall"].between(0, 1).all() and (table["false_alerts"] >= 0).all()
    assert table["severity_99"].between(0, 0.1).all() and (table["rebaselines"] >= 0).all()
    assert table["vus_pr"].between(0, 1).all()
    assert table["auc_roc"].mean() > 0.8  # the injected anomalies are found
    assert table["OmniAnomaly"].tolist() == [0.1, 0.2]
    printed = capsys.readouterr().out
    assert "Flags and alerts per data set" in printed and "Synth" in printed
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| Synth | 2 |") == 2  # the ranking and the flags tables


def test_cli_filters_files(tsbad_dir, tmp_path, capsys):
    args = [
        "evaluate",
        str(tsbad_dir),
        "--out",
        str(tmp_path),
        "--files",
        "002_",
        "--epochs",
        "2",
        "--window",
        "16",
        "--set",
        "hidden_size=16",
    ]
    assert main(args) == 0
    assert [p.name for p in tmp_path.glob("0*.csv")] == ["002_Synth_id_2_Test_tr_500_1st_700.csv"]


def test_directory_without_benchmark_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no TSB-AD-format files"):
        tsbad_files(tmp_path)


def test_nab_layout_is_scored_causally(tmp_path):
    import json

    import numpy as np

    from model.evaluation.nab import evaluate_nab

    nab = tmp_path / "nab"
    (nab / "data" / "realDemo").mkdir(parents=True)
    (nab / "labels").mkdir()
    (nab / "results" / "numenta" / "realDemo").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 1200
    values = np.sin(np.arange(n) * 2 * np.pi / 30) + 0.05 * rng.standard_normal(n)
    values[900:910] += 3.0
    stamps = pd.date_range("2024-01-01", periods=n, freq="5min")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(
        nab / "data" / "realDemo" / "demo.csv", index=False
    )
    window = [str(stamps[890]), str(stamps[920])]
    (nab / "labels" / "combined_windows.json").write_text(
        json.dumps({"realDemo/demo.csv": [window], "realDemo/none.csv": []})
    )
    pd.DataFrame({"anomaly_score": rng.random(n)}).to_csv(
        nab / "results" / "numenta" / "realDemo" / "demo.csv", index=False
    )
    table = evaluate_nab(nab, tmp_path / "out", TINY)
    scores = pd.read_csv(tmp_path / "out" / "realDemo" / "demo.csv")["score"]
    assert len(scores) == n and scores.notna().all()
    assert table.loc[0, "lvad"] > table.loc[0, "HTM"]  # beats random scores
    assert scores[900:910].mean() > scores[300:800].quantile(0.99)
    assert table.loc[0, "events"] == 1 and table.loc[0, "alert_recall"] == 1.0
    assert "flags and alerts" in (tmp_path / "out" / "nab-summary.md").read_text()
    assert len(pd.read_csv(tmp_path / "out" / "nab-summary.csv")) == 1


def test_baselines_find_an_obvious_anomaly():
    import numpy as np

    from model.evaluation.baselines import baseline_scores

    rng = np.random.default_rng(0)
    t = np.arange(1500)
    values = np.stack([np.sin(t / 5), np.cos(t / 7)], axis=1) + 0.05 * rng.standard_normal(
        (1500, 2)
    )
    values[1200:1205, 0] += 4.0
    scores = baseline_scores(values[:800], values, window=16)
    for name, score in scores.items():
        assert score.shape == (1500,)
        assert score[1195:1210].max() > np.quantile(score[:1100], 0.999), name
