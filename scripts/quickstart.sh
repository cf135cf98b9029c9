#!/usr/bin/env bash
# Sets up and runs the quickstart on this machine: installs MLX, builds mixsweep-runner, turns tiny
# Shakespeare into byte-level shards and trains examples/tiny.json (about a minute on a laptop CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-mlx.sh
cargo build --release --locked -p mixsweep-runner
RUNNER=target/release/mixsweep-runner
TEXT=${TEXT:-data/tinyshakespeare/input.txt}
[[ -f $TEXT ]] || TEXT=../shared/data/tinyshakespeare/input.txt
[[ -f data/shakespeare_char/train_00000.bin ]] || $RUNNER prepare --byte-level --input "$TEXT" --output data/shakespeare_char
$RUNNER smoke
$RUNNER train --config examples/tiny.json --train 'data/shakespeare_char/train_*.bin' --out runs/tiny
cat runs/tiny/summary.json
