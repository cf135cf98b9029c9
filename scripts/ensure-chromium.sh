#!/usr/bin/env bash
# Headless Chromium for the report test (orchestrator/cli/tests/report.rs): installs Debian's
# `chromium` package if no Chromium is on PATH. Idempotent; needs root (apt).
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if command -v "$c" >/dev/null && "$c" --version >/dev/null 2>&1; then
    echo "chromium: $("$c" --version)"
    exit 0
  fi
done
echo "chromium: installing Debian's chromium (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
chromium --version
