#!/bin/bash
# Stops what bench/cyrus/setup.sh and bench/cyrus/rolling.sh started, by the
# pids they recorded under $CYRUS_RUN (default ${TMPDIR:-/tmp}/mailrepl-cyrus),
# never by name.
#
#   bench/cyrus/teardown.sh            everything: rolling sync_client, both instances, syslog sink
#   bench/cyrus/teardown.sh replica    only the replica instance (an outage)
#   bench/cyrus/teardown.sh master     the rolling sync_client and the master instance
#
# SIGTERM, then SIGKILL after 10 s. The data under $CYRUS_RUN stays (setup.sh
# --fresh deletes it).
set -uo pipefail
RUN=${CYRUS_RUN:-${TMPDIR:-/tmp}/mailrepl-cyrus}

# stop PIDFILE NAME
stop() {
  local f=$1 name=$2 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; sleep 0.1; fi
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

case "${1:-all}" in
  replica) stop "$RUN/replica/master.pid" "replica instance" ;;
  master)
    stop "$RUN/rolling.pid" "rolling sync_client"
    stop "$RUN/master/master.pid" "master instance" ;;
  all)
    stop "$RUN/rolling.pid" "rolling sync_client"
    stop "$RUN/master/master.pid" "master instance"
    stop "$RUN/replica/master.pid" "replica instance"
    if [ -f "$RUN/syslog.pid" ]; then
      stop "$RUN/syslog.pid" "syslog sink"
      [ -S /dev/log ] && rm -f /dev/log
    fi ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
exit 0
