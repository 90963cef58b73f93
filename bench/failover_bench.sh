#!/bin/bash
# Planned failover benchmark (prints figures; not a test).
#
#   bench/failover_bench.sh [--failovers N] [--net A.B.C] [--dir DIR] [--bin DIR]
#
# --dir: scratch directory (default ${TMPDIR:-/tmp}/failover_bench); --bin: the
# binaries to measure (default build/bin, built first if one is missing;
# another build's bin directory measures an older version the same way).
#
# 1. Starts a dev cluster of 2 hosts x 20 slots (20 stores, 10 masters per
#    host) on loopback (--net, default 127.0.21).
# 2. Steady delivery load: tools/lmtp_deliver.py with 4 smtplib.LMTP
#    connections over the standard workload, retrying 4xx answers after a
#    fresh lookup, for the whole run.
# 3. N planned failovers (default 60), one at a time, round-robin over the
#    stores (each goes to the store's other slot); per failover the time
#    the coordinator reports (fence -> replica holds the fenced LSN ->
#    switch -> new master serving) and the wall time of `replctl failover`.
# 4. Undrain host1 (its preferred masters come back), then `replctl drain
#    host1` of its 10 masters, timed.
# Prints p50/p90/p99/max per failover, the drain time, bars (p99 < 200 ms,
# 10-store drain < 2 s) and one JSON line (prefix "JSON ").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build/bin
N=60
NET=127.0.21
DIR=${TMPDIR:-/tmp}/failover_bench
while [ $# -gt 0 ]; do
  case "$1" in
    --failovers) N=$2; shift 2 ;;
    --net) NET=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --bin) B=$(cd "$2" && pwd); shift 2 ;;
    *) echo "usage: $0 [--failovers N] [--net A.B.C] [--dir DIR] [--bin DIR]" >&2; exit 2 ;;
  esac
done
if [ "$B" = "$ROOT/build/bin" ]; then  # a fresh clone: build what is needed
  bash "$ROOT/bench/ensure_built.sh" replctl replicad coordinatord workload
fi
"$B/replctl" dev-cluster down --dir "$DIR/cluster" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"
load=""
cleanup() {
  [ -n "$load" ] && kill "$load" 2>/dev/null || true
  "$B/replctl" dev-cluster down --dir "$DIR/cluster" >/dev/null 2>&1 || true
}
trap cleanup EXIT
export MAILREPL_CLUSTER=$DIR/cluster

"$B/replctl" dev-cluster up --dir "$DIR/cluster" --hosts 2 --slots-per-host 20 --net "$NET"
"$B/workload" dump --dir "$DIR/eml" --count 20000 >/dev/null
python3 "$ROOT/tools/lmtp_deliver.py" --cluster "$DIR/cluster" --eml-dir "$DIR/eml" \
  --count 20000 --conns 4 --retry 60 --lookup "$B/replctl" > "$DIR/load.json" &
load=$!
sleep 1  # let the load reach its steady rate before the first failover

stores=$("$B/replctl" status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["stores"]))')
lsn_sum() {  # status exits 1 while a store is not ok: that is fine here
  { "$B/replctl" status --json || true; } | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(sum(int(sl.get("last_lsn", 0)) for st in s["stores"] for sl in st.get("slots", []) if sl.get("role") == "MASTER"))'
}
lsn0=$(lsn_sum); l0=$(date +%s%N)
: > "$DIR/failovers.txt"
for i in $(seq 0 $((N - 1))); do
  store=$(( i % stores + 1 ))
  t0=$(date +%s%N)
  out=$("$B/replctl" failover "$store" --json)
  t1=$(date +%s%N)
  took=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("took_ms", 0))')
  echo "$took $(( (t1 - t0) / 1000000 ))" >> "$DIR/failovers.txt"
done
lsn1=$(lsn_sum); l1=$(date +%s%N)
"$B/replctl" undrain host1 --parallel 1 > "$DIR/undrain.txt"
"$B/replctl" undrain host2 --parallel 1 >> "$DIR/undrain.txt"  # now 10 masters on each host
d0=$(date +%s%N)
"$B/replctl" drain host1 --parallel 1 > "$DIR/drain.txt"
d1=$(date +%s%N)
drain_ms=$(( (d1 - d0) / 1000000 ))
moved=$(grep -c '^\[' "$DIR/drain.txt" || true)
kill "$load" 2>/dev/null || true
wait "$load" 2>/dev/null || true
load=""

python3 - "$DIR/failovers.txt" "$drain_ms" "$moved" "$(uptime)" <<'PY'
import json, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
drain_ms, moved, load = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
coord = [r[0] for r in rows]
wall = [r[1] for r in rows]
print("machine:", load.strip())
print("planned failovers under LMTP load: %d" % len(rows))
print("  %-28s %6s %6s %6s %6s" % ("", "p50", "p90", "p99", "max"))
for name, v in (("coordinator took_ms", coord), ("replctl wall ms", wall)):
    print("  %-28s %6d %6d %6d %6d" % (name, pct(v, 50), pct(v, 90), pct(v, 99), max(v)))
print("drain of host1: %d stores moved in %d ms" % (moved, drain_ms))
p99 = pct(coord, 99)
print("bar p99 < 200 ms per store: %s (%d ms)" % ("PASS" if p99 < 200 else "FAIL", p99))
print("bar 10-store drain < 2 s: %s (%d stores, %d ms)" % ("PASS" if drain_ms < 2000 and moved >= 10 else "FAIL", moved, drain_ms))
print("JSON " + json.dumps({"failovers": len(rows), "p50_ms": pct(coord, 50), "p99_ms": p99,
                            "max_ms": max(coord), "wall_p99_ms": pct(wall, 99),
                            "drain_stores": moved, "drain_ms": drain_ms}))
PY
echo "delivery load during the failovers: $(( (lsn1 - lsn0) * 1000000000 / (l1 - l0) )) records/s committed by the masters"
