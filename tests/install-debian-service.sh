#!/usr/bin/env bash
# install-debian-service.sh PACKAGE COMMAND...
# Installs Debian's PACKAGE when any of its COMMANDs is missing, without leaving the
# package's own service running: the tests start their own instances on the ports they
# choose. Used by tests/docker/install-prometheus.sh and .ci/run (node exporter).
set -euo pipefail
package=$1
shift
missing() { for command in "$@"; do command -v "$command" >/dev/null || return 0; done; return 1; }
if ! missing "$@"; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install $package: needs root (or run: sudo apt-get install $package)" >&2
  exit 1
fi
echo "[install $package] apt-get install $package" >&2
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
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
# where systemd runs, the package enables its service: stop it and keep it off
if command -v systemctl >/dev/null && systemctl is-active --quiet "$package" 2>/dev/null; then
  systemctl stop "$package"
  systemctl disable --quiet "$package"
fi
! missing "$@"
