#!/usr/bin/env bash
# Installs Debian's PostgreSQL (15, package postgresql) and Redis (7, package redis-server)
# when their server binaries are missing, without leaving either package's own service
# running: the tests (tests/scale) start their own servers on free loopback ports in
# temporary directories. Used by .ci/run.
set -euo pipefail
have_postgres() {
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null && return 0
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}
have_redis() { command -v redis-server >/dev/null; }
if have_postgres && have_redis; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-postgres-redis: needs root (or run: sudo apt-get install postgresql redis-server)" >&2
  exit 1
fi
echo "[install-postgres-redis] apt-get install postgresql redis-server" >&2
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
  postgresql redis-server >/dev/null
# where systemd runs, the packages enable their services: stop them and keep them off
if command -v systemctl >/dev/null; then
  for unit in postgresql redis-server; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl stop "$unit"
      systemctl disable --quiet "$unit"
    fi
  done
fi
have_postgres && have_redis
