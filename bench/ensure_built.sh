#!/bin/bash
# ensure_built.sh TARGET...: builds the named targets into build/ (release,
# after scripts/deps.sh) if any of build/bin/TARGET is missing, so the bench
# scripts run from a fresh clone. Does nothing when all are there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for b in "$@"; do
  if [ ! -x "$ROOT/build/bin/$b" ]; then
    echo "building $* into $ROOT/build ..." >&2
    bash "$ROOT/scripts/deps.sh"
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja >/dev/null
    cmake --build "$ROOT/build" --target "$@" -j "$(nproc)"
    exit 0
  fi
done
