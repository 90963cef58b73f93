#!/bin/bash
# test.sh: installs dependencies, builds twice (release, and ASan+UBSan), runs every test in both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh release
bash scripts/build.sh sanitize
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j 2 --timeout 900
echo "== tests (ASan + UBSan build)"
ctest --test-dir build-asan --output-on-failure -j 2 --timeout 900
