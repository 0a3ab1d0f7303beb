#!/usr/bin/env bash
# The docker tier, `make test-docker` (docs/deployment.md): pytest on tests/docker.
#
#  1. Debian's prometheus package for promtool, if missing;
#  2. a Docker engine, the compose plugin and stand-ins for python:3.11-slim and
#     prom/prometheus:v2.53.0 (../shared/tools/docker-standins.sh; STANDINS overrides);
#  3. the test-only images of the scale profile (docker/test-images: PostgreSQL, Redis,
#     HAProxy on the stand-in Debian base);
#  4. static checks (hadolint, compose config, promtool, Grafana files, HAProxy), then
#     the scale profile (test_scale_stack.py) and the compose stack (test_stack.py).
# Always cleans up: the test project's containers and volumes, and the engine if this
# script started it. Images stay as the build cache. Timings: var/test-docker/.
set -euo pipefail
cd "$(dirname "$0")/../.."
STANDINS=${STANDINS:-../shared/tools/docker-standins.sh}
IMAGES=(python:3.11-slim prom/prometheus:v2.53.0)
COMPOSE=(docker compose -p lvad-ci -f docker-compose.yml -f docker/compose.ci.yml)
SCALE_COMPOSE=(docker compose -p lvad-scale-ci -f docker-compose.yml -f docker/compose.scale.yml
  -f docker/compose.ci.yml -f docker/compose.scale-ci.yml --profile scale)
# test-only images (docker/test-images/NAME/Dockerfile): name and tag
TEST_IMAGES=(postgres:15 redis:7 haproxy:2.6 node-exporter:1.5)
export LVAD_API_KEY=${LVAD_API_KEY:-ci-key}  # compose wants one for every command
export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-ci-password}  # and the scale profile this

log() { echo "[test-docker $(date +%T)] $*" >&2; }
began=$(date +%s)
started_engine=
cleanup() {
  local status=$?
  if docker info >/dev/null 2>&1; then
    "${COMPOSE[@]}" down -v --remove-orphans --timeout 30 >/dev/null 2>&1 || true
    "${SCALE_COMPOSE[@]}" down -v --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  fi
  if [ -n "$started_engine" ]; then
    log "stopping the engine this run started"
    bash "$STANDINS" down || true
  fi
  log "docker tier: exit $status after $(($(date +%s) - began)) s"
}
trap cleanup EXIT

bash tests/docker/install-prometheus.sh
if ! docker info >/dev/null 2>&1; then started_engine=1; fi
log "engine and stand-in images"
bash "$STANDINS" up "${IMAGES[@]}"
log "engine ready after $(($(date +%s) - began)) s"
mkdir -p var/test-docker
rm -f var/test-docker/measurements.json var/test-docker/scale-measurements.json
for image in "${TEST_IMAGES[@]}"; do
  docker build -q --network host -t "lvad-test/$image" "docker/test-images/${image%%:*}" \
    >var/test-docker/build-test-image.log 2>&1 || { cat var/test-docker/build-test-image.log; exit 1; }
done
log "test-only images ready after $(($(date +%s) - began)) s"

# the single-node stack first, so that its build time is that of a fresh build; the
# scale stack then reuses the image
LVAD_DOCKER_TIER=1 .venv/bin/pytest -q tests/docker --deselect tests/docker/test_scale_stack.py
LVAD_DOCKER_TIER=1 .venv/bin/pytest -q tests/docker/test_scale_stack.py
for file in var/test-docker/measurements.json var/test-docker/scale-measurements.json; do
  if [ -f "$file" ]; then log "$(basename "$file" .json): $(tr -d ' \n' <"$file")"; fi
done
