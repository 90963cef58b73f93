#!/bin/bash
# build.sh [release|sanitize|tsan]: configures and builds into build/, build-asan/ or build-tsan/.
#
# tsan: clang++ with ThreadSanitizer. Being clang, it also checks the lock
# annotations (-Wthread-safety -Werror, cmake/helpers.cmake) over every
# library and binary of the product. Of the tests it builds only TSAN_TESTS,
# the ones whose threads matter (the slot's group commit, applier, body
# writer and zeroer; sync client/server; the RPC server; the LMTP backend's
# pool), to keep CI short; `ctest -L '^selected$'` runs exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
TSAN_TESTS="slot_test;crash_test;replica_apply_test;sync_test;api_service_test;lmtp_slot_backend_test"
case "$kind" in
  release)  dir=build;      flags=() ;;
  sanitize) dir=build-asan; flags=(-DMAILREPL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug) ;;
  tsan)     dir=build-tsan
            flags=(-DCMAKE_CXX_COMPILER=clang++ -DMAILREPL_TSAN=ON "-DMAILREPL_ONLY_TESTS=$TSAN_TESTS") ;;
  *) echo "usage: build.sh [release|sanitize|tsan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
