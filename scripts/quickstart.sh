#!/usr/bin/env bash
# Sets up and runs the quickstart sweep on this machine: installs MLX, builds mixsweep and
# mixsweep-runner, turns tiny Shakespeare into byte-level shards, and runs sweeps/quickstart.yaml
# (local runner, local storage in ./mixsweep-runs), printing the ranked table. A second run is cached.
# It builds the dev profile (the one the tests use, ~8 min cold on 2 cores; a release build with polars
# takes ~30): training speed is MLX's either way (the release runner is ~6% faster on tiny CPU runs;
# use `cargo build --release` for GPU work).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-mlx.sh
# OpenBLAS makes CPU training ~5x faster (the runner preloads it); optional
bash scripts/ensure-openblas.sh || true
cargo build --locked -p mixsweep-runner -p mixsweep
BIN=target/debug
[[ -f data/shakespeare_char/train_00000.bin ]] || \
  $BIN/mixsweep-runner prepare --byte-level --input data/tinyshakespeare/input.txt --output data/shakespeare_char
$BIN/mixsweep-runner smoke
$BIN/mixsweep run sweeps/quickstart.yaml
