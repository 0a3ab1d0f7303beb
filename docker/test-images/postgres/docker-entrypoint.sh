#!/bin/sh
# The public postgres image's first start, in short: an empty PGDATA is initialised with
# POSTGRES_USER (default postgres) and POSTGRES_PASSWORD as superuser, password
# authentication from anywhere, and POSTGRES_DB (default: the user's name) created.
set -eu
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?the database is not initialised and POSTGRES_PASSWORD is not set}"
  user=${POSTGRES_USER:-postgres}
  database=${POSTGRES_DB:-$user}
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "$database" != postgres ]; then
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start >/dev/null
    psql --username="$user" --dbname=postgres --quiet \
      --command="CREATE DATABASE \"$database\""
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null
  fi
  echo "docker-entrypoint.sh: initialised $PGDATA (user $user, database $database)"
fi
exec "$@"
