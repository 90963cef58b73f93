#!/bin/bash
# The replication comparison with Cyrus IMAP 3.6 in one session (as root):
#
#   bench/cyrus/run.sh [--runs N] [--msgs M] [--extra X] [--out DIR] [--cyrus-only]
#                      [-- SYNC_BENCH_FLAGS...]
#
# 1. Builds build/ (release; scripts/deps.sh first) if a binary it needs is missing.
# 2. bench/cyrus/cyrus_bench.py --runs N --msgs M --extra X --out DIR: Cyrus's own
#    replication (initial sync, rolling under a burst, lag at 100 msg/s, catch-up
#    after a replica outage) on fresh pairs set up from Debian's packages
#    (bench/cyrus/setup.sh installs them), N runs, medians in DIR/summary.json.
# 3. Unless --cyrus-only: build/bin/sync_bench --cyrus DIR --messages M --catchup X
#    [SYNC_BENCH_FLAGS]: the same parts with our sync_client/sync_server, with
#    ratios against step 2.
# Defaults: N=3, M=10000, X=2000, DIR=${TMPDIR:-/tmp}/mailrepl-cyrus-out. Cyrus
# lives in $CYRUS_RUN (default ${TMPDIR:-/tmp}/mailrepl-cyrus) and is torn down
# at the end; the workload files in ${TMPDIR:-/tmp}/mailrepl-eml are kept.
# Takes ~2 minutes per Cyrus run at the defaults plus ~2 minutes for sync_bench;
# keep other work off the machine meanwhile.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=${TMPDIR:-/tmp}
runs=3 msgs=10000 extra=2000 out=$TMP/mailrepl-cyrus-out ours=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --msgs) msgs=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cyrus-only) ours=0; shift ;;
    --) shift; break ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (Cyrus runs as user cyrus)" >&2; exit 2; }

bash "$ROOT/bench/ensure_built.sh" workload sync_client sync_server sync_bench

trap '"$HERE/teardown.sh" >/dev/null 2>&1 || true' EXIT
"$HERE/setup.sh" >/dev/null  # installs Cyrus if needed, before anything is timed
python3 "$HERE/cyrus_bench.py" --runs "$runs" --msgs "$msgs" --extra "$extra" --out "$out" \
  --eml-dir "$TMP/mailrepl-eml"
"$HERE/teardown.sh" >/dev/null
if [ $ours = 1 ]; then
  echo
  "$ROOT/build/bin/sync_bench" --cyrus "$out" --messages "$msgs" --catchup "$extra" "$@"
fi
