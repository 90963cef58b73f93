#!/bin/bash
# demo.sh: the main job. Installs dependencies, builds, and runs a local
# two-slot replication demo doing real work:
#   1. creates a master slot and a replica slot (one store, two slots),
#   2. starts sync_server on the replica and a rolling sync_client (-r -z),
#   3. delivers the standard workload (10,000 messages, 100 users, seed 42)
#      into the master with 16 concurrent writers (durable, group commit),
#   4. stops the rolling client (SIGTERM) and runs a catch-up client, which
#      exits once the replica has everything,
#   5. verifies both slots (bodies hash to their GUIDs, index matches log),
#      compares their digests, and prints what the log holds and the figures.
# Environment: DEMO_DIR (default ./demo), DEMO_MESSAGES (default 10000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh release >/dev/null
B=$PWD/build/bin
DIR=${DEMO_DIR:-$PWD/demo}
N=${DEMO_MESSAGES:-10000}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== slots"
"$B/mailctl" --slot "$DIR/master" init --cluster-id demo --store-id 1 --slot-id 1
"$B/mailctl" --slot "$DIR/replica" init --cluster-id demo --store-id 1 --slot-id 2
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/secret"
chmod 600 "$DIR/secret"

echo "== replication: sync_server on the replica, rolling sync_client on the master"
"$B/sync_server" --slot "$DIR/replica" --listen 127.0.0.1:0 --secret-file "$DIR/secret" \
  2> "$DIR/sync_server.log" &
pids+=($!)
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/.*listening.* port=<\([0-9]*\)>.*/\1/p' "$DIR/sync_server.log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "sync_server did not start:"; cat "$DIR/sync_server.log"; exit 1; }
"$B/sync_client" --slot "$DIR/master" --server "127.0.0.1:$port" --secret-file "$DIR/secret" \
  -r -z --stats > "$DIR/rolling.stats" 2> "$DIR/rolling.log" &
rolling=$!
pids+=($rolling)

echo "== delivering the standard workload: $N messages, 16 writers"
"$B/workload" deliver --slot "$DIR/master" --count "$N" --threads 16 | tee "$DIR/deliver.json"

kill -TERM "$rolling"
wait "$rolling" || true
echo "== rolling client stopped (SIGTERM); its figures:"
sed 's/^/   /' "$DIR/rolling.stats"
echo "== catch-up client (exits when the replica holds every record)"
start=$(date +%s%N)
"$B/sync_client" --slot "$DIR/master" --server "127.0.0.1:$port" --secret-file "$DIR/secret" \
  --stats | grep -E "records_sent|replica_acked_lsn|lag_lsns" | sed 's/^/   /'
end=$(date +%s%N)
echo "   catch-up took $(( (end - start) / 1000000 )) ms"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true

echo "== verify both slots"
"$B/mailctl" --slot "$DIR/master" verify
"$B/mailctl" --slot "$DIR/replica" verify
m=$("$B/mailctl" --slot "$DIR/master" digest | head -2 | tr '\n' ' ')
r=$("$B/mailctl" --slot "$DIR/replica" digest | head -2 | tr '\n' ' ')
echo "   master : $m"
echo "   replica: $r"
if [ "$m" != "$r" ]; then echo "DIGESTS DIFFER"; exit 1; fi
echo "   digests match"

echo "== what the master's log holds"
"$B/mailctl" --slot "$DIR/master" dump-log > "$DIR/dump.txt"
awk '$1 ~ /^lsn=/ {n[$3]++} END {for (t in n) printf "   %-8s %d records\n", t, n[t]}' "$DIR/dump.txt" | sort
tail -3 "$DIR/dump.txt" | sed 's/^/   /'
echo "   first records:"
head -3 "$DIR/dump.txt" | cut -c1-140 | sed 's/^/     /'
echo "   log segments: $(ls "$DIR/master/log" | wc -l), $(du -sh "$DIR/master/log" | cut -f1); spool $(du -sh "$DIR/master/spool" | cut -f1)"
echo "== done: $DIR"
