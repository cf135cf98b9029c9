#!/usr/bin/env bash
# OpenBLAS for CPU training: MLX's Linux CPU wheel links netlib's reference BLAS, ~5x slower; the
# runner preloads the system's OpenBLAS instead when it finds one (runner/trainer/src/blas.rs).
# Installs Debian's `libopenblas0-pthread` when none is there. Idempotent; needs root (apt).
# `--path`: print the library's path (exit 1 if none), install nothing (docker/build-runner-cpu.sh).
# The places searched are the runner's (CANDIDATES in blas.rs).
set -euo pipefail
[[ $(uname -s) == Linux ]] || exit 0
for lib in /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0 \
  /usr/lib64/libopenblas.so.0 /usr/lib/libopenblas.so.0 /usr/local/lib/libopenblas.so.0; do
  if [[ -f $lib ]]; then
    [[ ${1:-} == --path ]] && echo "$lib" || echo "openblas: $lib"
    exit 0
  fi
done
[[ ${1:-} == --path ]] && exit 1
if ! command -v apt-get >/dev/null || [[ $(id -u) -ne 0 ]]; then
  echo "openblas: not found; CPU training runs on MLX's reference BLAS (install your distribution's OpenBLAS for ~5x)" >&2
  exit 1
fi
echo "openblas: installing Debian's libopenblas0-pthread (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq libopenblas0-pthread >/dev/null
ls /usr/lib/*/libopenblas.so.0
