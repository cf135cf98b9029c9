#!/usr/bin/env bash
# The test command (README, CI): installs MLX if needed, then builds once and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-mlx.sh
cargo test --workspace --locked "$@"
