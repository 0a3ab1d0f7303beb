#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool) when either is missing,
# without leaving the package's own service running on :9090: the tests start their
# own Prometheus on the ports they choose. Used by .ci/run and tests/docker/run.sh.
exec bash "$(dirname "$0")/../scale/install-servers.sh" prometheus
