#!/usr/bin/env bash
# Warm workers against one process per trial, on the device the runner picks (issue 14 §2).
# N trials of each config in CONFIGS, STEPS steps each, one after another: first as N `mixsweep-runner
# train` processes, then as N jobs of one `mixsweep-runner worker`, then as processes again (so kernel-
# cache warmth favours neither), and once more as jobs of a worker that traces every trial's step afresh
# (MIXSWEEP_STEP_CACHE=0, what a worker did before it reused compiled steps). Prints the wall-clock of
# each batch and every trial's time to step 0.
#   RUNNER=.gpu/b/mixsweep-runner TRAIN='/tmp/shakespeare_char/train_*.bin' bash scripts/bench/workers.sh
set -u
RUNNER=${RUNNER:-target/release/mixsweep-runner}
TRAIN=${TRAIN:?the training shards glob}
OUT=${OUT:-/tmp/mixsweep-bench}/workers
N=${N:-4}
STEPS=${STEPS:-300}
CONFIGS=${CONFIGS:-gqa_shakespeare mamba_shakespeare}
DEVICE=${DEVICE:-gpu}
mkdir -p "$OUT"
now() { date +%s.%N; }
args() { # config out
  printf '"train","--config","examples/%s.json","--train","%s","--device","%s","--steps","%s","--compute-dtype","bfloat16","--quiet","--out","%s"' \
    "$1" "$TRAIN" "$DEVICE" "$STEPS" "$2"
}
first_steps() { python3 - "$@" <<'PY'
import json, sys
print(" ".join(f"{json.load(open(p + '/summary.json')).get('time_to_first_step_s', float('nan')):.2f}" for p in sys.argv[1:]))
PY
}
processes() { # config tag
  local t0 outs=()
  t0=$(now)
  for i in $(seq "$N"); do
    "$RUNNER" train --config "examples/$1.json" --train "$TRAIN" --device "$DEVICE" --steps "$STEPS" \
      --compute-dtype bfloat16 --quiet --out "$OUT/$2_$i" > "$OUT/$2_$i.log" 2>&1 || echo "trial $i failed"
    outs+=("$OUT/$2_$i")
  done
  echo "$1: $N processes: wall $(python3 -c "print(f'{$(now) - $t0:.1f}')") s; time to step 0: $(first_steps "${outs[@]}")"
}
worker() { # config tag [step cache: 1 or 0]
  local t0 outs=()
  t0=$(now)
  for i in $(seq "$N"); do
    printf '{"args":[%s],"stdout":"%s","stderr":"%s"}\n' "$(args "$1" "$OUT/$2_$i")" "$OUT/$2_$i.out" "$OUT/$2_$i.log"
  done | MIXSWEEP_STEP_CACHE=${3:-1} "$RUNNER" worker > "$OUT/$2.answers"
  for i in $(seq "$N"); do outs+=("$OUT/$2_$i"); done
  echo "$1: $N jobs of one worker (step cache ${3:-1}): wall $(python3 -c "print(f'{$(now) - $t0:.1f}')") s; answers $(tr -d '\n' < "$OUT/$2.answers"); time to step 0: $(first_steps "${outs[@]}")"
}
for cfg in $CONFIGS; do
  "$RUNNER" train --config "examples/$cfg.json" --train "$TRAIN" --device "$DEVICE" --steps 2 --quiet \
    --compute-dtype bfloat16 --out "$OUT/warmup_$cfg" > "$OUT/warmup_$cfg.log" 2>&1
  processes "$cfg" "proc_a_$cfg"
  worker "$cfg" "worker_$cfg"
  worker "$cfg" "worker_fresh_$cfg" 0
  processes "$cfg" "proc_b_$cfg"
done
