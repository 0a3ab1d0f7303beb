"""The model artifact: one self-describing safetensors file.

Layout: the network weights as safetensors tensors, and in the safetensors
header metadata two keys: ``format`` ("lvad-model") and ``lvad`` (JSON with
the format version, architecture config, feature names, normalization,
threshold, attribution baseline, training metadata and a SHA-256 of the
weights). Nothing is unpickled on load. Saving writes a temporary file in the
target directory, fsyncs it and renames it over the target, so a reader sees
either the old or the new file, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from model.errors import ArtifactError

FORMAT_NAME = "lvad-model"
FORMAT_VERSION = 1


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_artifact(
    path: str | Path, tensors: dict[str, torch.Tensor], header: dict[str, Any]
) -> Path:
    """Atomically write weights and header (JSON-able) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header = {**header, "format_version": FORMAT_VERSION, "weights_sha256": weights_digest(tensors)}
    payload = serialize(tensors, metadata={"format": FORMAT_NAME, "lvad": json.dumps(header)})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_directory(path: str | Path) -> None:
    """Make the entries of directory ``path`` (files created, renamed or removed in it)
    durable: a rename is only on the disk once its directory is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify an artifact; any defect raises ArtifactError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(
            f"{path} is not a readable model file (truncated or corrupted): {exc}"
        ) from exc
    if metadata.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path} is not an lvad model file (no '{FORMAT_NAME}' header)")
    try:
        header = json.loads(metadata["lvad"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} has a damaged model header: {exc}") from exc
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has model format version {version!r}; this version reads {FORMAT_VERSION}"
        )
    if header.get("weights_sha256") != weights_digest(tensors):
        raise ArtifactError(f"{path} is corrupted: its weights do not match their checksum")
    return tensors, header
