#!/usr/bin/env bash
# Installs the MLX wheel whose libmlx mixsweep links (Linux CPU: mlx-cpu; macOS: mlx), plus the mlx
# Python package the parity test's reference uses. Idempotent: does nothing when it is already there.
set -euo pipefail
MLX_VERSION=${MLX_VERSION:-0.32.2}
PYTHON=${PYTHON:-python3}
have() { "$PYTHON" - "$MLX_VERSION" <<'PY' 2>/dev/null
import sys, os, mlx.core as mx
paths = list(__import__("mlx").__path__)
ok = mx.__version__ == sys.argv[1] and any(os.path.exists(os.path.join(p, "include/mlx/array.h")) for p in paths)
sys.exit(0 if ok else 1)
PY
}
if have; then
  echo "MLX $MLX_VERSION is installed"
  exit 0
fi
case "$(uname -s)" in
  Darwin) pkgs=("mlx==$MLX_VERSION") ;;
  *) if command -v nvidia-smi >/dev/null 2>&1 && [[ ${MIXSWEEP_MLX_BACKEND:-} == cuda ]]; then
       pkgs=("mlx-cuda-13==$MLX_VERSION" "mlx==$MLX_VERSION")
     else
       pkgs=("mlx-cpu==$MLX_VERSION" "mlx==$MLX_VERSION")
     fi ;;
esac
echo "installing ${pkgs[*]}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}"
have || { echo "MLX $MLX_VERSION still not importable after pip install" >&2; exit 1; }
