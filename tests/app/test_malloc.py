"""glibc malloc settings of the serving and command-line processes (``app/malloc.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = "from app.malloc import reuse_freed_buffers; print(reuse_freed_buffers())"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "True"),  # glibc (Debian, the image): set here
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "False"),  # the operator's setting wins
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "False"),
    ],
)
def test_freed_buffers_are_kept_unless_the_environment_says_otherwise(env, expected):
    # a fresh process each: mallopt changes the whole process for good
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected
