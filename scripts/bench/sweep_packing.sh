#!/usr/bin/env bash
# Sweep wall-clock with GPU packing and warm workers (issue 14 §3): a shortened gqa_vs_mamba sweep (3
# attention variants + mamba, 3 seeds, STEPS steps: 12 trials) run by the real orchestrator in each MODE,
# each into fresh storage, with a warm kernel cache (run the warm-up first).
#   warmup: 20-step trials, 4 per GPU in workers, to fill the kernel cache (its time is not a result)
#   proc1: one runner process per trial, one trial at a time (the old default)
#   proc4: processes, 4 per GPU;  work1/work2/work4: warm workers, 1/2/4 per GPU;  auto: trials_per_gpu auto
#   MIXSWEEP=.gpu/b/mixsweep RUNNER=.gpu/b/mixsweep-runner TRAIN='/tmp/shakespeare_char/train_*.bin' \
#     bash scripts/bench/sweep_packing.sh
set -u
MIXSWEEP=${MIXSWEEP:-target/release/mixsweep}
export MIXSWEEP_RUNNER=${RUNNER:-target/release/mixsweep-runner}
TRAIN=${TRAIN:?the training shards glob}
OUT=${OUT:-/tmp/mixsweep-bench}/packing
STEPS=${STEPS:-300}
MODES=${MODES:-proc1 proc4 work1 work2 work4 auto}
mkdir -p "$OUT"
sweep() { # mode trials_per_gpu workers [steps]
  cat > "$OUT/$1.yaml" <<EOF
name: packing_$1
variants:
  - name: attention
    base: $PWD/examples/gqa_shakespeare.json
    grid:
      "blocks[type=plain].kv_heads": [1, 2, 6]
  - name: mamba
    base: $PWD/examples/mamba_shakespeare.json
set:
  training.compute_dtype: bfloat16
steps: ${4:-$STEPS}
seeds: [1, 2, 3]
train: $TRAIN
trials_per_gpu: $2
workers: $3
EOF
}
for m in $MODES; do
  case $m in
    warmup) sweep "$m" 4 true 20 ;;   # compiles every shape's kernels into the cache; not timed
    proc1) sweep "$m" 1 false ;;
    proc4) sweep "$m" 4 false ;;
    work1) sweep "$m" 1 true ;;
    work2) sweep "$m" 2 true ;;
    work4) sweep "$m" 4 true ;;
    auto*) sweep "$m" auto true ;;   # auto2, ...: again, with the calibration cached
    *) echo "unknown mode $m"; continue ;;
  esac
  t0=$(date +%s.%N)
  MIXSWEEP_WORK_DIR="$OUT/work_$m" "$MIXSWEEP" run "$OUT/$m.yaml" --storage "$OUT/runs_$m" > "$OUT/$m.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  echo "$m: exit $rc, sweep wall $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; $(grep -m1 'at a time' "$OUT/$m.log"); $(grep -m1 'trials_per_gpu auto:' "$OUT/$m.log")" | tee -a "$OUT/summary.txt"
done
# final losses per mode (packing and workers must not change them)
python3 - "$OUT" $MODES <<'PY' | tee -a "$OUT/summary.txt"
import glob, json, sys
out = sys.argv[1]
for m in sys.argv[2:]:
    losses = []
    for p in sorted(glob.glob(f"{out}/runs_{m}/trials/*/summary.json")):
        s = json.load(open(p))
        losses.append(f"{s.get('final_train_loss', float('nan')):.4f}")
    print(m, "final train losses (by trial id):", " ".join(losses))
PY
