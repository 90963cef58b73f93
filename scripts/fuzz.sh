#!/bin/bash
# fuzz.sh [--seconds N] [--list] [NAME...]: builds the libFuzzer targets
# (scripts/build.sh fuzz: clang, ASan + UBSan, into build-fuzz/) and runs
# every one, or the named ones, for N seconds each (default 30).
#
#   bash scripts/fuzz.sh --seconds 5          # the test command's short run
#   bash scripts/fuzz.sh --seconds 600        # a campaign: 10 minutes per target
#   bash scripts/fuzz.sh --seconds 60 lmtp_fuzzer
#
# Per target NAME (test/fuzz/NAME.cc):
#   - first every input in test/fuzz/regressions/NAME/ runs once: each is a
#     crash found before and fixed, and must not crash again;
#   - then libFuzzer runs for N seconds over build-fuzz/corpus/NAME/ (its
#     working corpus, kept between runs) seeded from test/fuzz/corpus/NAME/,
#     with test/fuzz/NAME.dict as dictionary if it exists;
#   - a crash is kept as build-fuzz/crashes/NAME-crash-<sha1>; copy it into
#     test/fuzz/regressions/NAME/ once fixed.
# Prints one line per target: runs, execs/s, edges covered (cov), features
# (ft), corpus size. Exits 1 if any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=30
names=()
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done

bash scripts/build.sh fuzz
out=build-fuzz
if [ ${#names[@]} -eq 0 ]; then
  for f in "$out"/fuzz/*; do names+=("$(basename "$f")"); done
fi
if [ "$list" = 1 ]; then printf '%s\n' "${names[@]}"; exit 0; fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$out/crashes" "$out/logs"
failed=()
summary=()
for name in "${names[@]}"; do
  bin="$out/fuzz/$name"
  [ -x "$bin" ] || { echo "fuzz.sh: no fuzzer $name (test/fuzz/CMakeLists.txt)" >&2; exit 2; }
  seeds="test/fuzz/corpus/$name"
  work="$out/corpus/$name"
  mkdir -p "$work"
  regressions="test/fuzz/regressions/$name"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "== $name: regression inputs"
    if ! "$bin" "$regressions"/* >"$out/logs/$name.regressions" 2>&1; then
      tail -40 "$out/logs/$name.regressions"
      failed+=("$name (regression)")
      continue
    fi
  fi
  args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/crashes/$name-"
        -timeout=10 -rss_limit_mb=2048)
  [ -f "test/fuzz/$name.dict" ] && args+=(-dict="test/fuzz/$name.dict")
  [ -d "$seeds" ] || seeds=""
  echo "== $name: ${seconds}s"
  log="$out/logs/$name.log"
  if ! "$bin" "${args[@]}" "$work" ${seeds:+"$seeds"} >"$log" 2>&1; then
    tail -60 "$log"
    failed+=("$name")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  summary+=("$(printf '%-22s runs %10s  execs/s %7s  cov %6s  ft %7s  corpus %6s' \
    "$name" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashed: ${failed[*]} (inputs in $out/crashes/, logs in $out/logs/)" >&2
  exit 1
fi
