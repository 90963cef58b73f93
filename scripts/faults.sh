#!/usr/bin/env bash
# A long fault-injection campaign (docs/faults.md): N seeded schedules on
# fresh clusters in network namespaces; prints the figures; exits non-zero
# on a violated property. Needs root and build/bin (scripts/build.sh release).
#
#   scripts/faults.sh --schedules 50 --seed 1 [--kinds partition,pause,kill,disk,clock,operator]
#                     [--keep] [--json FILE]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export MAILREPL_BIN="${MAILREPL_BIN:-$here/build/bin}"
if [[ ! -x "$MAILREPL_BIN/replicad" ]]; then
  echo "no binaries in $MAILREPL_BIN: run scripts/build.sh release" >&2
  exit 2
fi
python3 "$here/test/faults/run.py" --cleanup >/dev/null
exec python3 "$here/test/faults/run.py" --schedules 20 --seed "$(date +%s)" "$@"
