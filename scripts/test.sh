#!/bin/bash
# test.sh: installs dependencies, builds three times (release; ASan+UBSan; clang with TSan and
# -Wthread-safety), runs every test in the first two and the concurrent ones under TSan, then
# builds the libFuzzer targets (clang, ASan+UBSan) and runs each for 5 seconds after its
# regression inputs (scripts/fuzz.sh; a campaign is `scripts/fuzz.sh --seconds 600`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh release
bash scripts/build.sh sanitize
bash scripts/build.sh tsan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j 2 --timeout 900
echo "== tests (ASan + UBSan build)"
ctest --test-dir build-asan --output-on-failure -j 2 --timeout 900
echo "== tests (TSan build: the concurrent ones, scripts/build.sh)"
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L '^selected$' --output-on-failure -j 2 --timeout 900
echo "== fuzzers (5 s each, after their regression inputs)"
bash scripts/fuzz.sh --seconds 5
