#!/bin/bash
# build.sh [release|sanitize|tsan|fuzz]: configures and builds into build/, build-asan/,
# build-tsan/ or build-fuzz/.
#
# tsan: clang++ with ThreadSanitizer. Being clang, it also checks the lock
# annotations (-Wthread-safety -Werror, cmake/helpers.cmake) over every
# library and binary of the product. Of the tests it builds only TSAN_TESTS,
# the ones whose threads matter (the slot's group commit, applier, body
# writer and zeroer; sync client/server; the RPC server; the LMTP backend's
# pool), to keep CI short; `ctest -L '^selected$'` runs exactly those.
#
# fuzz: clang with ASan, UBSan and libFuzzer's coverage; builds only the
# fuzzers (target `fuzzers`, test/fuzz/) and what they link.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
TSAN_TESTS="slot_test;crash_test;replica_apply_test;sync_test;api_service_test;lmtp_slot_backend_test"
case "$kind" in
  release)  dir=build;      flags=() ;;
  sanitize) dir=build-asan; flags=(-DMAILREPL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug) ;;
  tsan)     dir=build-tsan
            flags=(-DCMAKE_CXX_COMPILER=clang++ -DMAILREPL_TSAN=ON "-DMAILREPL_ONLY_TESTS=$TSAN_TESTS") ;;
  fuzz)     dir=build-fuzz
            flags=(-DCMAKE_CXX_COMPILER=clang++ -DMAILREPL_FUZZ=ON -DMAILREPL_ONLY_TESTS=none
                   "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g") ;;
  *) echo "usage: build.sh [release|sanitize|tsan|fuzz]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -G Ninja "${flags[@]}" >/dev/null
if [ "$kind" = fuzz ]; then
  cmake --build "$dir" -j "$(nproc)" --target fuzzers
else
  cmake --build "$dir" -j "$(nproc)"
fi
