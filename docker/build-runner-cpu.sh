#!/usr/bin/env bash
# Builds the CPU runner image (docker/runner-cpu.Dockerfile) from a runner built on this machine:
#   bash docker/build-runner-cpu.sh [TAG]        (default TAG: mixsweep-runner:cpu)
# RUNNER_BIN picks the binary (default: target/release/mixsweep-runner, else target/debug/...).
# The image holds the binary, its shared libraries as `ldd` resolves them here (libmlx from the mlx-cpu
# wheel, libstdc++, libc, ...), the dynamic loader and CA certificates. Nothing is pulled from a registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-mixsweep-runner:cpu}
bin=${RUNNER_BIN:-}
if [[ -z $bin ]]; then
  for b in "$root/target/release/mixsweep-runner" "$root/target/debug/mixsweep-runner"; do
    [[ -x $b ]] && { bin=$b; break; }
  done
fi
[[ -n $bin && -x $bin ]] || { echo "no runner binary: cargo build -p mixsweep-runner first (or set RUNNER_BIN)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
fs=$ctx/rootfs
mkdir -p "$fs/opt/mixsweep/bin" "$fs/opt/mixsweep/lib" "$fs/tmp" "$fs/etc/ssl/certs"
chmod 1777 "$fs/tmp"
cp "$bin" "$fs/opt/mixsweep/bin/mixsweep-runner"
strip --strip-debug "$fs/opt/mixsweep/bin/mixsweep-runner" 2>/dev/null || true
# Every library the binary loads, as resolved on this machine (including libmlx's own dependencies).
ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do cp -L "$lib" "$fs/opt/mixsweep/lib/"; done
loader=$(ldd "$bin" | awk '/ld-linux/ {print $1}')
mkdir -p "$fs$(dirname "$loader")"
cp -L "$loader" "$fs$loader"
cp -L /etc/ssl/certs/ca-certificates.crt "$fs/etc/ssl/certs/" 2>/dev/null || true
# A minimal passwd/group so that tools inside see names for the ids the orchestrator runs trials as.
mkdir -p "$fs/etc"
printf 'root:x:0:0:root:/tmp:/sbin/nologin\nmixsweep:x:1000:1000::/tmp:/sbin/nologin\n' > "$fs/etc/passwd"
printf 'root:x:0:\nmixsweep:x:1000:\n' > "$fs/etc/group"
cp "$root/docker/runner-cpu.Dockerfile" "$ctx/Dockerfile"
# The system's OpenBLAS, if any, with its own libraries: the runner preloads it over the wheel's
# reference BLAS (~5x faster CPU training; runner/trainer/src/blas.rs), told where by MIXSWEEP_BLAS.
if blas=$(bash "$root/scripts/ensure-openblas.sh" --path) && [[ -n $blas ]]; then
  cp -L "$blas" "$fs/opt/mixsweep/lib/libopenblas.so.0"
  ldd "$blas" | awk '/=> \// {print $3}' | while read -r lib; do cp -nL "$lib" "$fs/opt/mixsweep/lib/"; done
  echo 'ENV MIXSWEEP_BLAS=/opt/mixsweep/lib/libopenblas.so.0' >> "$ctx/Dockerfile"
fi
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built $tag from $bin ($(du -sh "$fs" | cut -f1) root filesystem)"
