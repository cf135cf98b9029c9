#!/usr/bin/env bash
# The test command (README, CI): installs MLX if needed, makes sure a Docker engine answers (the Docker
# backend's tests run real containers), starts a one-node Slurm (the Slurm backend's tests submit real
# jobs), installs Chromium (the report test renders the page) and fetches helm for the chart test,
# then builds once and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-mlx.sh
# scipy: the results statistics are checked against scipy.stats
python3 -c 'import scipy' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check scipy
# Without them only their own tests fail (with a message saying what is missing); the rest still run.
bash scripts/ensure-docker.sh || echo "warning: no Docker engine: the docker backend tests will fail" >&2
bash scripts/ensure-slurm.sh || echo "warning: no Slurm: the slurm backend tests will fail" >&2
bash scripts/ensure-chromium.sh || echo "warning: no Chromium: the report test will fail" >&2
bash scripts/get-helm.sh || echo "warning: no helm: the chart test will fail" >&2
cargo test --workspace --locked --no-fail-fast "$@"
