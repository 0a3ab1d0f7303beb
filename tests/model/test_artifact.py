"""The model file: round trip, atomic writes, refusal of damaged files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from model.artifact import FORMAT_NAME, read_artifact, write_artifact
from model.config import ModelConfig
from model.detector import Detector
from model.errors import ArtifactError
from model.scoring import step_scores


def test_round_trip_gives_identical_scores(detector, model_file, synthetic):
    loaded = Detector.load(model_file)
    again, scored = loaded.score(synthetic.test), detector.score(synthetic.test)
    np.testing.assert_array_equal(again.score, scored.score)
    np.testing.assert_array_equal(again.alarm_score, scored.alarm_score)
    assert loaded.metadata == detector.metadata
    assert loaded.feature_names == detector.feature_names
    assert loaded.threshold == detector.threshold
    assert loaded.config == detector.config
    np.testing.assert_array_equal(loaded.sample(3, seed=1), detector.sample(3, seed=1))


def test_truncated_file_is_refused(model_file, tmp_path):
    data = model_file.read_bytes()
    broken = tmp_path / "truncated.lvad"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupted"):
        Detector.load(broken)


def test_corrupted_weights_are_refused(model_file, tmp_path):
    data = bytearray(model_file.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside the tensor data
    broken = tmp_path / "corrupted.lvad"
    broken.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        Detector.load(broken)


def test_garbage_and_missing_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.lvad"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ArtifactError):
        Detector.load(garbage)
    with pytest.raises(ArtifactError, match="not found"):
        Detector.load(tmp_path / "absent.lvad")


def _rewrite_header(path, out, change):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    lvad = json.loads(header["__metadata__"]["lvad"])
    change(header["__metadata__"], lvad)
    header["__metadata__"]["lvad"] = json.dumps(lvad)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return out


def test_future_format_version_is_refused(model_file, tmp_path):
    path = _rewrite_header(
        model_file, tmp_path / "future.lvad", lambda meta, lvad: lvad.update(format_version=99)
    )
    with pytest.raises(ArtifactError, match="format version 99"):
        Detector.load(path)


def test_incompatible_architecture_is_refused(model_file, tmp_path):
    def change(meta, lvad):
        lvad["config"]["hidden_size"] += 1

    path = _rewrite_header(model_file, tmp_path / "incompatible.lvad", change)
    with pytest.raises(ArtifactError, match="incompatible"):
        Detector.load(path)


def test_model_fitted_on_smoothed_scores_keeps_its_alarm(model_file, tmp_path, synthetic):
    """A file saved with smoothing on before the alarm score: its threshold was fitted
    on smoothed validation scores, so its alarm stays the smoothed score."""

    def change(meta, lvad):
        lvad["config"]["smooth_window"] = None
        del lvad["metadata"]["threshold_scores"]
        del lvad["streams"]  # such a file predates streams and their checks

    loaded = Detector.load(_rewrite_header(model_file, tmp_path / "smoothed.lvad", change))
    assert loaded.metadata["threshold_scores"] == "smoothed"
    scored = loaded.score(synthetic.test)
    # the smoothed score, formed from the smoothed log_prob and kl that come back
    smoothed = step_scores(scored.log_prob, scored.kl, loaded.window)
    np.testing.assert_allclose(scored.alarm_score, smoothed, rtol=1e-12)
    np.testing.assert_array_equal(scored.is_anomaly, scored.alarm_score > loaded.threshold.value)


def test_model_saved_before_smoothing_loads_with_the_defaults(model_file, tmp_path, synthetic):
    def change(meta, lvad):
        del lvad["config"]["smooth_window"]
        del lvad["metadata"]["threshold_scores"]

    loaded = Detector.load(_rewrite_header(model_file, tmp_path / "older.lvad", change))
    assert loaded.config.smooth_window == ModelConfig().smooth_window
    assert loaded.metadata["threshold_scores"] == "unsmoothed"  # no smoothing back then
    scored = loaded.score(synthetic.test)
    smoothed = step_scores(scored.log_prob, scored.kl, loaded.window)
    # max(unsmoothed, smoothed score): the smoothed score where it is larger, not only it
    assert (scored.alarm_score >= smoothed - 1e-9).all()
    assert (scored.alarm_score > smoothed + 1e-6).any()


def test_foreign_safetensors_file_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ArtifactError, match=FORMAT_NAME):
        read_artifact(path)


def test_failed_write_leaves_old_file_and_no_temporary(model_file, tmp_path, monkeypatch):
    import os

    import torch

    target = tmp_path / "model.lvad"
    target.write_bytes(model_file.read_bytes())

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_artifact(target, {"w": torch.zeros(3)}, {"config": {}})
    assert target.read_bytes() == model_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["model.lvad"]
