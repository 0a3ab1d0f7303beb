#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool) when either is missing,
# without leaving the package's own service running on :9090: the tests start their
# own Prometheus on the ports they choose. Used by .ci/run and tests/docker/run.sh.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-prometheus: needs root (or run: sudo apt-get install prometheus)" >&2
  exit 1
fi
echo "[install-prometheus] apt-get install prometheus" >&2
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then  # deny service starts while the package installs
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created=1
fi
remove_policy() { if [ -n "$created" ]; then rm -f "$policy"; fi; }
trap remove_policy EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# where systemd runs, the package enables its service: stop it and keep it off
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus
  systemctl disable --quiet prometheus
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null
