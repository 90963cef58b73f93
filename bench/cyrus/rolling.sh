#!/bin/bash
# Starts or stops the master's rolling replication (`sync_client -r`), the way
# Cyrus replicates continuously: it reads the master's sync log
# ($CYRUS_RUN/master/config/sync/log, written by lmtpd and imapd because of
# `sync_log: 1`) every sync_repeat_interval and pushes those mailboxes.
#
#   bench/cyrus/rolling.sh start   (as root; instances from bench/cyrus/setup.sh)
#   bench/cyrus/rolling.sh stop
#
# sync_client -r forks and its launcher exits at once, so it is started as
# user cyrus in a session of its own (setsid) and its pid is the process left
# in that session; it goes to $CYRUS_RUN/rolling.pid. stop asks it to leave
# at the end of its cycle (sync_shutdown_file), then SIGTERMs that pid after
# 10 s. Prints the pid on start.
set -euo pipefail
RUN=${CYRUS_RUN:-${TMPDIR:-/tmp}/mailrepl-cyrus}
CONF=$RUN/master/imapd.conf
SHUTDOWN=$RUN/master/config/sync/shutdown
PIDFILE=$RUN/rolling.pid

alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  start)
    [ -f "$CONF" ] || { echo "rolling.sh: no master in $RUN (bench/cyrus/setup.sh)" >&2; exit 2; }
    if alive; then cat "$PIDFILE"; exit 0; fi
    rm -f "$SHUTDOWN"
    setsid setpriv --reuid=cyrus --regid=mail --init-groups \
      /usr/lib/cyrus/bin/sync_client -C "$CONF" -r </dev/null >>"$RUN/rolling.log" 2>&1 &
    launcher=$!
    wait "$launcher" || { echo "rolling.sh: sync_client -r failed (see $RUN/syslog.log)" >&2; exit 1; }
    for _ in $(seq 100); do
      pid=$(ps -s "$launcher" -o pid= | tr -d ' ' | head -1)
      if [ -n "$pid" ]; then echo "$pid" > "$PIDFILE"; echo "$pid"; exit 0; fi
      sleep 0.02
    done
    echo "rolling.sh: sync_client -r exited at once (see $RUN/syslog.log)" >&2
    exit 1 ;;
  stop)
    if alive; then
      pid=$(cat "$PIDFILE")
      : > "$SHUTDOWN" && chown cyrus:mail "$SHUTDOWN"
      for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"
    fi
    rm -f "$PIDFILE" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
