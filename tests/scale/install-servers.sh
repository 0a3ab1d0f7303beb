#!/usr/bin/env bash
# Installs Debian's server packages named on the command line (postgresql, redis-server,
# haproxy, prometheus, prometheus-node-exporter) when their binaries are missing, without
# leaving any package's own service running: the tests and benchmarks start their own
# servers on free loopback ports in temporary directories.
#
#   tests/scale/install-servers.sh postgresql redis-server prometheus-node-exporter  # .ci/run
#   tests/scale/install-servers.sh prometheus   # tests/docker/install-prometheus.sh
#   tests/scale/install-servers.sh haproxy      # make bench-replicas
set -euo pipefail
installed() {  # $1: package
  case "$1" in
    postgresql) command -v pg_ctl >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null ;;
    redis-server) command -v redis-server >/dev/null ;;
    haproxy) command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] ;;
    prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null ;;
    prometheus-node-exporter) command -v prometheus-node-exporter >/dev/null ;;
    *) echo "install-servers: unknown package $1" >&2; exit 2 ;;
  esac
}
missing=()
for package in "$@"; do installed "$package" || missing+=("$package"); done
if [ ${#missing[@]} = 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-servers: needs root (or run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[install-servers] apt-get install ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then  # deny service starts while the packages install
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created=1
fi
remove_policy() { if [ -n "$created" ]; then rm -f "$policy"; fi; }
trap remove_policy EXIT
apt=(apt-get -o DPkg::Lock::Timeout=600)  # another install may hold the lock a while
"${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
# where systemd runs, the packages enable their services: stop them and keep them off
if command -v systemctl >/dev/null; then
  for unit in "${missing[@]}"; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl stop "$unit"
      systemctl disable --quiet "$unit"
    fi
  done
fi
for package in "$@"; do installed "$package"; done
