#!/usr/bin/env bash
# Installs Debian's wrk (the load generator of tests/reliability/load.py) when missing.
# Used by .ci/run, `make load-test` and `make bench`.
set -euo pipefail
if command -v wrk >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-wrk: needs root (or run: sudo apt-get install wrk)" >&2
  exit 1
fi
echo "[install-wrk] apt-get install wrk" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v wrk >/dev/null
