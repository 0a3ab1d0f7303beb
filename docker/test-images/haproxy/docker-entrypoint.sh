#!/bin/sh
# As the public haproxy image's: options alone run haproxy; haproxy runs in the
# foreground in master-worker mode (-W -db), so SIGUSR1 stops it softly.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
