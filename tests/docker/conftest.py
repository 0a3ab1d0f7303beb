"""The docker tier runs only under `make test-docker` (tests/docker/run.sh sets
LVAD_DOCKER_TIER=1): it needs hadolint, promtool, a Docker engine and stand-in images.
`make test` collects nothing here."""

import os

if os.environ.get("LVAD_DOCKER_TIER") != "1":
    collect_ignore_glob = ["test_*.py"]
