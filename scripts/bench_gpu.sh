#!/usr/bin/env bash
# GPU benchmark: mixsweep-runner against the reference trainers, in one machine session.
#
# Runs on the GPU machine (see BENCHMARKS.md for how it is launched with the device tool):
#   source .gpu/b/install.sh && bash scripts/bench_gpu.sh
# Expects: $RUNNER (default .gpu/b/mixsweep-runner), the tiny Shakespeare text at $TEXT
# (default .gpu/b/input.txt), the reference scripts in .gpu/b/bench/, and $OUT for results.
set -u
RUNNER=${RUNNER:-.gpu/b/mixsweep-runner}
TEXT=${TEXT:-.gpu/b/input.txt}
OUT=${OUT:-/tmp/mixsweep-bench}
PARTS=${PARTS:-refs,ours,full}
mkdir -p "$OUT"
log() { echo "### $*" | tee -a "$OUT/bench.log"; }
run() { log "$*"; "$@" 2>&1 | tee -a "$OUT/bench.log"; }
# A config by name: an example, or an ablation variant in scripts/bench/ablate/ (ZOO may name either).
config() { if [[ -f examples/$1.json ]]; then echo "examples/$1.json"; else echo "scripts/bench/ablate/$1.json"; fi; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
run "$RUNNER" smoke --device gpu || exit 1
run "$RUNNER" prepare --byte-level --input "$TEXT" --output /tmp/shakespeare_char
TRAIN='/tmp/shakespeare_char/train_*.bin'

if [[ $PARTS == *refs* ]]; then
  (cd .gpu/b/bench && run python3 gpt_mlx.py fp32 && run python3 gpt_mlx.py bf16 \
    && run python3 gpt_torch.py bf16 compile && run python3 gpt_torch.py fp32 compile)
fi
if [[ $PARTS == *ours* ]]; then
  for dtype in float32 bfloat16; do
    run "$RUNNER" train --config scripts/bench/gpt_bench.json --train "$TRAIN" --device gpu \
      --compute-dtype $dtype --out "$OUT/bench_$dtype"
  done
  for cfg in gqa_shakespeare mamba_shakespeare; do
    run "$RUNNER" train --config "$(config "$cfg")" --train "$TRAIN" --device gpu --steps 300 \
      --compute-dtype bfloat16 --out "$OUT/${cfg}_300"
  done
fi
if [[ $PARTS == *full* ]]; then
  for dtype in bfloat16 float32; do
    run "$RUNNER" train --config examples/nanogpt_shakespeare.json --train "$TRAIN" --device gpu \
      --compute-dtype $dtype --out "$OUT/nanogpt_$dtype"
  done
fi
if [[ $PARTS == *refbf16* ]]; then
  (cd .gpu/b/bench && run python3 gpt_mlx.py bf16)
fi
if [[ $PARTS == *benchbf16* ]]; then
  run "$RUNNER" train --config scripts/bench/gpt_bench.json --train "$TRAIN" --device gpu \
    --compute-dtype bfloat16 --out "$OUT/bench_bfloat16"
  # the same without the finite guard (what the guard costs)
  MIXSWEEP_FINITE_GUARD=0 run "$RUNNER" train --config scripts/bench/gpt_bench.json --train "$TRAIN" \
    --device gpu --compute-dtype bfloat16 --out "$OUT/bench_bfloat16_noguard"
fi
# Muon (mixlab's default) against AdamW on the nanoGPT config, 1000 steps each, bf16.
if [[ $PARTS == *optim* ]]; then
  for opt in adamw muon; do
    python3 - "$opt" > "/tmp/nanogpt_$opt.json" <<'PY'
import json, re, sys
src = open("examples/nanogpt_shakespeare.json").read()
cfg = json.loads(re.sub(r"(^|\s)//[^\n]*", "", src))
cfg["name"] = "nanogpt_" + sys.argv[1]
cfg["training"]["optimizer"] = sys.argv[1]
cfg["training"]["val_every"] = 250
print(json.dumps(cfg))
PY
    run "$RUNNER" train --config "/tmp/nanogpt_$opt.json" --train "$TRAIN" --device gpu \
      --steps "${OPTIM_STEPS:-1000}" --compute-dtype bfloat16 --out "$OUT/nanogpt_${opt}_${OPTIM_STEPS:-1000}"
  done
fi
# Block families: each ~10M example for 300 steps in bf16 next to GQA (same session); ZOO picks
# the configs (default: all). PARTS=zoowarm first compiles every config's kernels into the shared
# kernel cache (2-step runs, WAVE of them at once: NVRTC is host-bound); PARTS=zoo then times the
# 300-step runs one after another with warm kernels. Table: scripts/bench/zoo_table.py.
ZOO=${ZOO:-gqa_shakespeare retnet_shakespeare rwkv_shakespeare legacy_mamba_shakespeare moe_shakespeare perceiver_shakespeare hgrn2_shakespeare mlstm_shakespeare mamba3_canonical_shakespeare s4d_shakespeare gated_deltanet_shakespeare mamba_shakespeare}
export MIXSWEEP_KERNEL_CACHE=${MIXSWEEP_KERNEL_CACHE:-/tmp/mixsweep-kernels}
if [[ $PARTS == *zoowarm* ]]; then
  n=0
  for cfg in $ZOO; do
    log "warm $cfg"
    ( start=$(date +%s)
      MIXSWEEP_EAGER_FIRST_VAL=0 "$RUNNER" train --config "$(config "$cfg")" --train "$TRAIN" --device gpu \
        --steps 2 --compute-dtype bfloat16 --quiet --out "$OUT/warm_$cfg" > "$OUT/warm_$cfg.log" 2>&1
      echo "warm $cfg: exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/bench.log" ) &
    n=$((n + 1))
    if (( n % ${WAVE:-5} == 0 )); then wait; fi
  done
  wait
elif [[ $PARTS == *zoo* ]]; then
  for cfg in $ZOO; do
    run "$RUNNER" train --config "$(config "$cfg")" --train "$TRAIN" --device gpu --steps 300 \
      --compute-dtype bfloat16 --quiet --out "$OUT/zoo_$cfg"
  done
  # ZOO_CHUNKED: configs timed again with their fused recurrence kernels off (MIXSWEEP_SCAN=chunked, or
  # ZOO_SCAN=chunked:linear to turn off only the named kernels, see runner/trainer/src/lower/fused.rs),
  # for a same-session before/after of a kernel (their chunked kernels compile in the timed run's
  # step 0 unless zoowarm ran them too, which the steady rate excludes).
  for cfg in ${ZOO_CHUNKED:-}; do
    MIXSWEEP_SCAN=${ZOO_SCAN:-chunked} run "$RUNNER" train --config "$(config "$cfg")" --train "$TRAIN" --device gpu \
      --steps 300 --compute-dtype bfloat16 --quiet --out "$OUT/zoo_${cfg}_chunked"
  done
fi
# Custom-kernel start-up: 2-step runs of STARTUP_CONFIGS (run PARTS=zoowarm for them first, so MLX's own
# kernels are cached) with our kernels from the per-machine binary cache (default) and with MLX's
# per-process JIT (MIXSWEEP_KERNEL_JIT=mlx, the before figure), alternating.
if [[ $PARTS == *kerneljit* ]]; then
  for cfg in ${STARTUP_CONFIGS:-mamba_shakespeare}; do
    for jit in ours mlx ours mlx; do
      TIMEFORMAT="kerneljit $cfg jit=$jit: wall %R s"
      { time MIXSWEEP_KERNEL_JIT=$jit MIXSWEEP_TIMING=1 "$RUNNER" train --config "$(config "$cfg")" \
        --train "$TRAIN" --device gpu --steps 2 --compute-dtype bfloat16 --quiet --out "$OUT/kerneljit_${cfg}_$jit"; } 2>&1 | tee -a "$OUT/bench.log"
    done
  done
fi
# Start-up: process start to exit of 2-step runs (warm kernel cache when run after zoowarm), with the
# runner's phase breakdown (MIXSWEEP_TIMING=1), the first validation op by op (default) and compiled.
if [[ $PARTS == *startup* ]]; then
  python3 -c 'import time; t = time.time(); import mlx.core as mx; a = mx.ones((1024, 1024)); mx.eval(a @ a); print(f"MLX Python: import, CUDA init and a matmul in {time.time() - t:.2f} s")' 2>&1 | tee -a "$OUT/bench.log"
  # the reference: MLX Python's own start-up for a tiny.json-shaped model, cold then warm kernels
  for i in 1 2; do MLX_PTX_CACHE_DIR=/tmp/mixsweep-py-ptx python3 scripts/bench/first_step.py 2>&1 | tail -1 | tee -a "$OUT/bench.log"; done
  for cfg in ${STARTUP_CONFIGS:-tiny gqa_shakespeare}; do
    for eager in ${EAGER_MODES:-1 0 1}; do
      TIMEFORMAT="startup $cfg eager_first_val=$eager: wall %R s"
      { time MIXSWEEP_EAGER_FIRST_VAL=$eager MIXSWEEP_TIMING=1 "$RUNNER" train --config "$(config "$cfg")" \
        --train "$TRAIN" --device gpu --steps 2 --compute-dtype bfloat16 --quiet --out "$OUT/startup_${cfg}_$eager"; } 2>&1 | tee -a "$OUT/bench.log"
    done
  done
  for attn in ${ATTN_MODES-fused unfused fused unfused}; do
    TIMEFORMAT="startup tiny attention=$attn: wall %R s"
    { time MIXSWEEP_ATTENTION=$attn MIXSWEEP_TIMING=1 "$RUNNER" train --config examples/tiny.json \
      --train "$TRAIN" --device gpu --steps 2 --quiet --out "$OUT/startup_attn_$attn"; } 2>&1 | tee -a "$OUT/bench.log"
  done
fi
for f in "$OUT"/*/summary.json; do echo "== $f"; cat "$f"; done > "$OUT/summaries.txt"
