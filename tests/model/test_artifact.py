"""The model file: round trip, atomic writes, refusal of damaged files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from model.artifact import FORMAT_NAME, read_artifact, write_artifact
from model.detector import Detector
from model.errors import ArtifactError


def test_round_trip_gives_identical_scores(detector, model_file, synthetic):
    loaded = Detector.load(model_file)
    np.testing.assert_array_equal(
        loaded.score(synthetic.test).score, detector.score(synthetic.test).score
    )
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
