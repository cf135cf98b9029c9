#!/usr/bin/env bash
# Makes sure a Docker engine answers `docker info`: starts the service (or dockerd) when it is installed
# but not running. The Docker backend's tests need it; they build their image locally (no registry).
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "no Docker engine: install Docker Engine (the docker backend tests need one)" >&2
  exit 1
fi
echo "starting the Docker engine"
(service docker start || systemctl start docker) >/dev/null 2>&1 || (nohup dockerd >/tmp/dockerd.log 2>&1 &)
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "the Docker engine did not start (see /tmp/dockerd.log)" >&2
exit 1
