#!/usr/bin/env bash
# Downloads a slice of FineWeb-Edu (HuggingFaceFW/fineweb-edu, config sample-10BT) as JSONL and prepares
# it with a byte-level BPE:  bash scripts/download-fineweb.sh [OUTPUT_DIR] [MAX_DOCS] [VOCAB_SIZE]
# Needs internet access to huggingface.co and `pip install datasets`.
# UNTESTED HERE: our development and CI machines cannot reach Hugging Face. The prepare step it ends
# with is the tested `mixsweep-runner prepare` (streaming, all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/fineweb_edu}
max_docs=${2:-200000}
vocab=${3:-8192}
RUNNER=${RUNNER:-target/release/mixsweep-runner}
[[ -x $RUNNER ]] || cargo build --release --locked -p mixsweep-runner
mkdir -p "$out/raw"
python3 - "$out/raw/fineweb_edu.jsonl" "$max_docs" <<'PY'
import json, sys
from datasets import load_dataset
path, max_docs = sys.argv[1], int(sys.argv[2])
ds = load_dataset("HuggingFaceFW/fineweb-edu", name="sample-10BT", split="train", streaming=True)
with open(path + ".partial", "w") as f:
    for i, row in enumerate(ds):
        if i >= max_docs:
            break
        f.write(json.dumps({"text": row["text"]}) + "\n")
import os
os.replace(path + ".partial", path)
PY
"$RUNNER" prepare --vocab-size "$vocab" --val-split 0.05 --input "$out/raw/fineweb_edu.jsonl" --output "$out"
