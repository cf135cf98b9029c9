#!/usr/bin/env bash
# Fresh machines: process start to the end of step 1 for every example (2-step bf16 runs), on the GPU
# machine (see BENCHMARKS.md, "Fresh machines").
#   PHASE=cold   each config on a machine that has never compiled its kernels: an empty local cache
#                (MIXSWEEP_CACHE: kernel folder, CUDA driver cache, CPU kernels) and an empty kernel
#                store of its own, which the run fills (WAVE configs at once: NVRTC is host-bound,
#                so these times are contended; they fill the stores).
#   PHASE=fresh  each config, one at a time, on another empty machine that starts from the store the
#                cold run filled (a fresh pod of a cluster whose first pod compiled), then once more
#                on that machine (its local folders now warm).
# RUNNER, TRAIN and OUT as in scripts/bench_gpu.sh; CONFIGS (default: every examples/*.json).
set -u
RUNNER=${RUNNER:-.gpu/b/mixsweep-runner}
TRAIN=${TRAIN:-/tmp/shakespeare_char/train_*.bin}
OUT=${OUT:-/tmp/mixsweep-bench}
WORK=${WORK:-/tmp/fresh}
CONFIGS=${CONFIGS:-$(cd examples && ls *.json | sed 's/\.json$//')}
mkdir -p "$OUT" "$WORK"

# run_one LABEL CONFIG: one 2-step run on the machine "$WORK/machine_LABEL_CONFIG" with the config's store
run_one() {
  local label=$1 cfg=$2 machine=$3
  local start end rc
  start=$(date +%s.%N)
  env -u MIXSWEEP_KERNEL_CACHE -u MLX_PTX_CACHE_DIR -u CUDA_CACHE_PATH \
    MIXSWEEP_CACHE="$WORK/$machine" MIXSWEEP_KERNEL_STORE="file://$WORK/store_$cfg" MIXSWEEP_TIMING=1 \
    "$RUNNER" train --config "examples/$cfg.json" --train "$TRAIN" --device gpu --steps 2 \
    --compute-dtype bfloat16 --quiet --out "$WORK/out_${label}_$cfg" > "$WORK/${label}_$cfg.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  python3 - "$label" "$cfg" "$rc" "$start" "$end" "$WORK/out_${label}_$cfg/summary.json" <<'PY' | tee -a "$OUT/fresh.txt"
import json, sys
label, cfg, rc, start, end, path = sys.argv[1:]
wall = float(end) - float(start)
try:
    s = json.load(open(path))
    ph = {p["name"]: p["seconds"] for p in s.get("startup", [])}
    print(f"{label:5} {cfg:30} rc={rc} step1={s.get('time_to_first_step_s') or float('nan'):7.2f} s "
          f"wall={wall:7.2f} s fetched={s.get('kernels_fetched')} in {ph.get('kernel_fetch', 0):.2f} s "
          f"submit={ph.get('first_step_submit', 0):.2f} val={ph.get('first_validation', 0):.2f}")
except Exception as e:
    print(f"{label:5} {cfg:30} rc={rc} wall={wall:7.2f} s, no summary ({e})")
PY
}

case ${PHASE:-cold} in
  cold)
    n=0
    for cfg in $CONFIGS; do
      run_one cold "$cfg" "machine_cold_$cfg" &
      n=$((n + 1))
      if (( n % ${WAVE:-6} == 0 )); then wait; fi
    done
    wait
    for cfg in $CONFIGS; do
      echo "store $cfg: $(find "$WORK/store_$cfg" -type f | wc -l) files, $(du -sh "$WORK/store_$cfg" | cut -f1)"
    done | tee -a "$OUT/fresh.txt"
    ;;
  fresh)
    for cfg in $CONFIGS; do
      run_one fresh "$cfg" "machine_fresh_$cfg"
      run_one again "$cfg" "machine_fresh_$cfg"
    done
    ;;
esac
