"""Turn per-point anomaly flags into events (contiguous runs) for reports."""

from __future__ import annotations

import numpy as np


def find_events(flags: np.ndarray, max_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``flags``; runs closer than ``max_gap`` merge."""
    flags = np.asarray(flags, dtype=bool)
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
