"""The lvad command line, used as a person would: demo -> train -> score -> sample -> info."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from model.detector import Detector

FAST = ["--epochs", "3", "--window", "16", "--set", "hidden_size=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["demo", "--out", str(root / "demo")]) == 0
    model = root / "demo.lvad"
    assert main(["train", str(root / "demo" / "train.csv"), "--out", str(model), *FAST]) == 0
    return root, model


def test_train_prints_epochs_and_writes_model(trained, capsys):
    root, model = trained
    assert model.is_file() and model.stat().st_size > 1000


def test_score_writes_one_row_per_point(trained, capsys):
    root, model = trained
    out = root / "scores.csv"
    code = main(
        [
            "score",
            str(model),
            str(root / "demo" / "test.csv"),
            "--label-column",
            "label",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    scores = pd.read_csv(out)
    test = pd.read_csv(root / "demo" / "test.csv")
    assert len(scores) == len(test)
    columns = {"timestamp", "score", "alarm_score", "is_anomaly", "severity", "warm_up"}
    assert columns | {"top_variables"} <= set(scores.columns)
    # the scores the model gives the same rows, as the command wrote them
    scored = Detector.load(model).score(test.drop(columns=["timestamp", "label"]).to_numpy())
    np.testing.assert_allclose(scores["score"], scored.score, rtol=1e-6)
    np.testing.assert_allclose(scores["alarm_score"], scored.alarm_score, rtol=1e-6)
    # the model's flags: above the threshold, where the ranking score confirms them, or
    # carried on right after such a flag (model/carry.py)
    np.testing.assert_array_equal(scores["is_anomaly"], scored.is_anomaly.astype(int))
    flags = scores["is_anomaly"].to_numpy() == 1
    above = (scores["alarm_score"] > scores["threshold"]).to_numpy()
    carried = np.flatnonzero(flags & ~above)
    assert above[flags].any() and carried.min(initial=1) > 0 and flags[carried - 1].all()
    printed = capsys.readouterr().out
    assert "labelled events flagged" in printed
    assert "AUC-ROC" in printed
    event_lines = [line for line in printed.splitlines() if "peak alarm score" in line]
    assert event_lines and all("top: " in line for line in event_lines)


def test_score_summary_without_anomalies(trained, capsys):
    import dataclasses

    import numpy as np

    from app.cli.output import print_score_summary
    from model.data import prepare_frame
    from model.detector import Detector

    root, model = trained
    detector = Detector.load(model)
    table = prepare_frame(pd.read_csv(root / "demo" / "train.csv").head(200))
    scored = detector.score(table.values)
    quiet = dataclasses.replace(scored, is_anomaly=np.zeros_like(scored.is_anomaly))
    print_score_summary(detector, table, quiet)
    assert "0 anomalous points in 0 events" in capsys.readouterr().out


def test_score_refuses_wrong_variables(trained, tmp_path, capsys):
    _, model = trained
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": range(40), "b": range(40)}).to_csv(bad, index=False)
    assert main(["score", str(model), str(bad)]) == 2
    assert "missing variable" in capsys.readouterr().err


def test_sample_prints_csv_with_feature_names(trained, capsys):
    _, model = trained
    capsys.readouterr()
    assert main(["sample", str(model), "-n", "2", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("sample,step,cpu_util")
    assert len(lines) == 1 + 2 * 16


def test_posterior_sample_around_a_window(trained, tmp_path):
    root, model = trained
    out = tmp_path / "posterior.csv"
    code = main(
        [
            "sample",
            str(model),
            "-n",
            "3",
            "--around",
            str(root / "demo" / "test.csv"),
            "--ignore",
            "label",
            "--at",
            "100",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert len(pd.read_csv(out)) == 3 * 16


def test_info_describes_the_model(trained, capsys):
    _, model = trained
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["window"] == 16
    assert info["feature_names"][0] == "cpu_util"
    assert info["threshold"]["method"] in ("pot", "quantile")
    assert "history" not in info["metadata"]


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    out = ["train", "x.csv", "--out", str(tmp_path / "m")]
    assert main([*out, "--set", "colour=blue"]) == 2
    assert "unknown model parameter 'colour'; known: batch_size," in capsys.readouterr().err
    assert main([*out, "--set", "window"]) == 2
    assert "--set expects NAME=VALUE" in capsys.readouterr().err
    assert main([*out, "--set", "window=wide"]) == 2
    assert "model parameter window must be an integer, got 'wide'" in capsys.readouterr().err


def test_a_held_channel_at_its_threshold_is_not_flagged(tmp_path, capsys):
    """Channels that hold one value over the validation part score one value there,
    which is then the threshold: the later rows at that value, rounded otherwise in
    their last digits, are at the threshold and not flagged; a move of the value is."""
    rng = np.random.default_rng(0)
    n = 3_000
    pressure, valve = np.full(n, 5.0), np.zeros(n)
    for start in rng.choice(np.arange(100, 1_200), 12, replace=False):
        pressure[start : start + 5] = 5.0 + rng.normal(0.0, 0.5, 5)
    for start in rng.choice(np.arange(100, 1_200), 6, replace=False):
        valve[start : start + 20] = 1.0
    pressure[2_700:2_720] = 5.3  # the held value moves
    frame = pd.DataFrame({"pressure": pressure, "valve": valve})
    frame[:2_000].to_csv(tmp_path / "train.csv", index=False)
    frame[2_000:].to_csv(tmp_path / "test.csv", index=False)
    model, out = tmp_path / "held.lvad", tmp_path / "scores.csv"
    train = ["train", str(tmp_path / "train.csv"), "--out", str(model), "--epochs", "3"]
    assert main(train) == 0  # the default window: its validation windows are all alike
    assert main(["score", str(model), str(tmp_path / "test.csv"), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    threshold = scores["threshold"].iloc[0]
    at = np.isclose(scores["alarm_score"], threshold, rtol=0.0, atol=1e-9) & (
        scores["warm_up"] == 0
    )
    assert at.sum() > 500  # most rows score the threshold itself
    assert not scores["is_anomaly"][at].any()
    assert scores["is_anomaly"][700:720].all()
