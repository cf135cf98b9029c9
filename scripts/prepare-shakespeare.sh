#!/usr/bin/env bash
# Prepares tiny Shakespeare (data/tinyshakespeare/input.txt, or the file given) twice:
#   data/shakespeare_char     bytes, vocab 256
#   data/shakespeare_bpe1024  a byte-level BPE of 1024 tokens (tokenizer.json beside the shards)
# Both folders also get mixlab.dataset.json and the bits-per-byte lookup tables.
# RUNNER picks the binary (default: the quickstart's target/debug/mixsweep-runner, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:-data/tinyshakespeare/input.txt}
RUNNER=${RUNNER:-target/debug/mixsweep-runner}
[[ -x $RUNNER ]] || cargo build --locked -p mixsweep-runner
"$RUNNER" prepare --byte-level --input "$text" --output data/shakespeare_char
"$RUNNER" prepare --vocab-size 1024 --input "$text" --output data/shakespeare_bpe1024
