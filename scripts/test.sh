#!/usr/bin/env bash
# The test command (README, CI): installs MLX (and OpenBLAS for the CPU runs) if needed, makes sure a
# Docker engine answers (the Docker backend's tests run real containers), starts a one-node Slurm (the Slurm backend's tests submit real
# jobs), installs Chromium (the report test renders the page) and fetches helm for the chart test,
# then builds once and runs every test (two lanes at once; arguments: one plain `cargo test` run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-mlx.sh
# scipy: the results statistics are checked against scipy.stats
python3 -c 'import scipy' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check scipy
# Without them only their own tests fail (with a message saying what is missing); the rest still run.
bash scripts/ensure-openblas.sh || echo "warning: no OpenBLAS: the blas tests will fail, CPU tests run ~5x slower" >&2
bash scripts/ensure-docker.sh || echo "warning: no Docker engine: the docker backend tests will fail" >&2
bash scripts/ensure-slurm.sh || echo "warning: no Slurm: the slurm backend tests will fail" >&2
bash scripts/ensure-chromium.sh || echo "warning: no Chromium: the report test will fail" >&2
bash scripts/get-helm.sh || echo "warning: no helm: the chart test will fail" >&2
if [[ $# -gt 0 ]]; then   # a filter or cargo options: one plain run
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
# Build every test target once, then run two lanes at once: the orchestrator's end-to-end tests (mostly
# waiting on runner processes, containers and Slurm jobs) next to the runner's and the libraries' tests
# (CPU-bound, mostly on one core). Same package selection in both, so nothing is built twice.
cargo test --workspace --locked --no-run
lanes=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
e2e, rest = [], []
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "test" in t["kind"]:
            (e2e if p["name"] == "mixsweep" else rest).append("--test " + t["name"])
print(" ".join(e2e)); print("--lib --bins " + " ".join(rest))')
e2e=$(sed -n 1p <<<"$lanes")
rest=$(sed -n 2p <<<"$lanes")
# the lanes are lists of cargo options (word splitting wanted); a lane's status is cargo's (pipefail)
# shellcheck disable=SC2086
(cargo test --workspace --locked --no-fail-fast $e2e 2>&1 | sed -u 's/^/[e2e] /') &
e2e_pid=$!
# shellcheck disable=SC2086
(cargo test --workspace --locked --no-fail-fast $rest 2>&1 | sed -u 's/^/[unit] /') &
rest_pid=$!
status=0
wait "$e2e_pid" || status=1
wait "$rest_pid" || status=1
[[ $status -eq 0 ]] && echo "all tests passed" || echo "some tests failed (lines above: FAILED)" >&2
exit "$status"
