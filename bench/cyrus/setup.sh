#!/bin/bash
# Cyrus IMAP 3.6 (Debian's packages) as a replicated pair on loopback: the
# reference system of the project's benchmarks.
#
#   bench/cyrus/setup.sh [--fresh] [--no-install]     (as root)
#   bench/cyrus/setup.sh --start master|replica       (restart one instance, config kept)
#
# 1. Installs cyrus-imapd, cyrus-common, cyrus-replication, cyrus-clients,
#    cyrus-admin and sasl2-bin with apt-get if /usr/lib/cyrus/bin/master or
#    sync_client is missing (services are kept from starting during the install);
#    --no-install refuses instead.
# 2. Writes two instances under $CYRUS_RUN (default ${TMPDIR:-/tmp}/mailrepl-cyrus):
#      master   IMAP 127.0.0.1:BASE+1, LMTP 127.0.0.1:BASE+2 (lmtpd -a: no LMTP AUTH),
#               sync_log on, a rolling sync_client is started by bench/cyrus/rolling.sh
#      replica  IMAP 127.0.0.1:BASE+11, LMTP 127.0.0.1:BASE+12, sync_server 127.0.0.1:BASE+13
#    BASE = $CYRUS_PORT_BASE (default 26100). Each instance has its own
#    imapd.conf, cyrus.conf, sasldb (admin "cyrus", a random password kept in
#    $CYRUS_RUN/password), spool, metadata and sockets; every command in
#    cyrus.conf carries -C (Cyrus's master does not pass its -C on).
# 3. Starts each instance's `master` as user cyrus (group mail) in its own
#    session (setsid: Cyrus's master signals its process group when it stops)
#    in the foreground (-D), so the pid recorded in $CYRUS_RUN/<inst>/master.pid
#    is the one bench/cyrus/teardown.sh stops.
# 4. If the machine has no /dev/log (no syslog daemon), binds it with
#    bench/cyrus/syslog_sink.py so that Cyrus's syslog(3) lines land in
#    $CYRUS_RUN/syslog.log (teardown stops it and removes the socket).
#
# --fresh: tear down what runs and delete $CYRUS_RUN first (empty mailboxes).
# Knobs (environment): CYRUS_RUN, CYRUS_PORT_BASE, CYRUS_SYNC_REPEAT (master's
# sync_repeat_interval, seconds, default 1), CYRUS_RECONNECT_MAXWAIT (seconds,
# default 5). Prints the addresses when both instances answer.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=${CYRUS_RUN:-${TMPDIR:-/tmp}/mailrepl-cyrus}
BASE=${CYRUS_PORT_BASE:-26100}
CYRUS_BIN=/usr/lib/cyrus/bin
REPEAT=${CYRUS_SYNC_REPEAT:-1}
MAXWAIT=${CYRUS_RECONNECT_MAXWAIT:-5}
PACKAGES=(cyrus-imapd cyrus-common cyrus-replication cyrus-clients cyrus-admin sasl2-bin)

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
fresh=0 install=1 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=1; shift ;;
    --no-install) install=0; shift ;;
    --start) only=${2:-}; [[ $only == master || $only == replica ]] || usage; shift 2 ;;
    *) usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (instances run as user cyrus)" >&2; exit 2; }

install_cyrus() {
  if [[ -x $CYRUS_BIN/master && -x $CYRUS_BIN/sync_client && -x $CYRUS_BIN/sync_server ]] &&
     command -v saslpasswd2 >/dev/null; then
    return
  fi
  if [ $install = 0 ]; then
    echo "setup.sh: Cyrus is not installed (apt-get install ${PACKAGES[*]})" >&2; exit 2
  fi
  echo "installing ${PACKAGES[*]} ..." >&2
  # Keep the packages' own instance (/etc/imapd.conf) from starting: exit code
  # 101 of policy-rc.d means "action forbidden" to invoke-rc.d.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy
  fi
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${PACKAGES[@]}"; } >&2 || rc=$?
  [ -n "$policy" ] && rm -f "$policy"
  [ $rc = 0 ] || { echo "setup.sh: apt-get failed ($rc)" >&2; exit 1; }
}

# write_instance NAME IMAP_PORT LMTP_PORT [SYNC_PORT]: config of one instance.
write_instance() {
  local inst=$1 imap=$2 lmtp=$3 sync=${4:-} D=$RUN/$1
  local C=$D/config
  mkdir -p "$C"/{socket,proc,lock,log,sync,db} "$D/spool" "$D/meta"
  {
    echo "# Cyrus $inst instance of the mailrepl benchmarks (bench/cyrus/setup.sh)"
    echo "configdirectory: $C"
    echo "defaultpartition: default"
    echo "partition-default: $D/spool"
    echo "metapartition-default: $D/meta"
    echo "metapartition_files: header index cache expunge squat annotations lock"
    echo "proc_path: $C/proc"
    echo "mboxname_lockpath: $C/lock"
    echo "lmtpsocket: $C/socket/lmtp"
    echo "idlesocket: $C/socket/idle"
    echo "notifysocket: $C/socket/notify"
    echo "servername: mailrepl-cyrus-$inst"
    echo "syslog_prefix: mailrepl-cyrus-$inst"
    echo "admins: cyrus"
    echo "allowplaintext: yes"
    echo "sasl_pwcheck_method: auxprop"
    echo "sasl_auxprop_plugin: sasldb"
    echo "sasl_sasldb_path: $C/sasldb2"
    echo "sasl_mech_list: PLAIN"
    echo "altnamespace: no"
    echo "unixhierarchysep: no"
    echo "virtdomains: off"
    echo "hashimapspool: true"
    echo "lmtp_downcase_rcpt: yes"
    echo "umask: 077"
    if [ "$inst" = master ]; then
      echo "# replication, client side: every change is logged to sync/log and a"
      echo "# rolling sync_client (bench/cyrus/rolling.sh) pushes it to the replica"
      echo "sync_log: 1"
      echo "sync_host: 127.0.0.1"
      echo "sync_port: $((BASE + 13))"
      echo "sync_try_imap: 0"
      echo "sync_authname: cyrus"
      echo "sync_password: $PASSWORD"
      echo "sync_repeat_interval: $REPEAT"
      echo "sync_reconnect_maxwait: $MAXWAIT"
      echo "sync_shutdown_file: $C/sync/shutdown"
    fi
  } > "$D/imapd.conf"
  local conf="-C $D/imapd.conf"
  {
    echo "# Cyrus $inst instance of the mailrepl benchmarks (bench/cyrus/setup.sh)"
    echo "START {"
    echo "  recover cmd=\"$CYRUS_BIN/ctl_cyrusdb $conf -r\""
    echo "}"
    echo "SERVICES {"
    echo "  imap cmd=\"$CYRUS_BIN/imapd $conf\" listen=\"127.0.0.1:$imap\" prefork=1"
    echo "  lmtp cmd=\"$CYRUS_BIN/lmtpd -a $conf\" listen=\"127.0.0.1:$lmtp\" prefork=1"
    echo "  lmtpunix cmd=\"$CYRUS_BIN/lmtpd $conf\" listen=\"$C/socket/lmtp\" prefork=0"
    [ -n "$sync" ] && echo "  syncserver cmd=\"$CYRUS_BIN/sync_server $conf\" listen=\"127.0.0.1:$sync\" prefork=1"
    echo "}"
    echo "EVENTS {"
    echo "  checkpoint cmd=\"$CYRUS_BIN/ctl_cyrusdb $conf -c\" period=30"
    echo "}"
  } > "$D/cyrus.conf"
  printf '%s' "$PASSWORD" | saslpasswd2 -p -c -f "$C/sasldb2" -u "mailrepl-cyrus-$inst" cyrus 2>/dev/null
}

# start_instance NAME: the instance's master in the foreground, own session.
start_instance() {
  local inst=$1 D=$RUN/$1
  if [[ -f $D/master.pid ]] && kill -0 "$(cat "$D/master.pid")" 2>/dev/null; then
    echo "$inst already running (pid $(cat "$D/master.pid"))" >&2; return
  fi
  rm -f "$D"/config/socket/* "$D/master.pid"
  setsid setpriv --reuid=cyrus --regid=mail --init-groups \
    "$CYRUS_BIN/master" -C "$D/imapd.conf" -M "$D/cyrus.conf" -p "$D/master.run.pid" -D \
    </dev/null >>"$D/master.log" 2>&1 &
  echo $! > "$D/master.pid"
}

# settle_pid NAME: once master runs, the pid it wrote itself is the one to stop
# (the same as $! unless setsid had to fork).
settle_pid() {
  local D=$RUN/$1 p
  p=$(cat "$D/master.run.pid" 2>/dev/null || true)
  if [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then echo "$p" > "$D/master.pid"; fi
}

# wait_tcp PORT: until something accepts on 127.0.0.1:PORT (10 s).
wait_tcp() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "setup.sh: nothing listens on 127.0.0.1:$1 (see $RUN/*/master.log, $RUN/syslog.log)" >&2
  return 1
}

start_syslog_sink() {
  [ -e /dev/log ] && return
  python3 "$HERE/syslog_sink.py" /dev/log "$RUN/syslog.log" </dev/null >/dev/null 2>&1 &
  echo $! > "$RUN/syslog.pid"
  for _ in $(seq 100); do [ -S /dev/log ] && return; sleep 0.02; done
}

install_cyrus
if [ -n "$only" ]; then
  [ -f "$RUN/$only/cyrus.conf" ] || { echo "setup.sh: no instance in $RUN (run setup.sh first)" >&2; exit 2; }
  start_instance "$only"
  if [ "$only" = master ]; then wait_tcp $((BASE + 1)); wait_tcp $((BASE + 2))
  else wait_tcp $((BASE + 11)); wait_tcp $((BASE + 13)); fi
  settle_pid "$only"
  exit 0
fi
if [ $fresh = 1 ]; then
  "$HERE/teardown.sh" >/dev/null 2>&1 || true
  rm -rf "$RUN"
fi
mkdir -p "$RUN"
chmod 755 "$RUN"
# The cyrus user must reach $RUN: every parent directory needs o+x.
if ! setpriv --reuid=cyrus --regid=mail --init-groups test -x "$RUN"; then
  echo "setup.sh: user cyrus cannot enter $RUN; set CYRUS_RUN to a directory it can reach" >&2
  exit 2
fi
if [ ! -f "$RUN/password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$RUN/password")
fi
PASSWORD=$(cat "$RUN/password")
if [ ! -f "$RUN/master/cyrus.conf" ]; then
  write_instance master $((BASE + 1)) $((BASE + 2))
  write_instance replica $((BASE + 11)) $((BASE + 12)) $((BASE + 13))
  chown -R cyrus:mail "$RUN/master" "$RUN/replica"
  chmod 750 "$RUN/master" "$RUN/replica"
fi
start_syslog_sink
start_instance master
start_instance replica
wait_tcp $((BASE + 1)); wait_tcp $((BASE + 2))
wait_tcp $((BASE + 11)); wait_tcp $((BASE + 13))
settle_pid master
settle_pid replica
echo "cyrus up in $RUN: master imap 127.0.0.1:$((BASE + 1)) lmtp 127.0.0.1:$((BASE + 2));" \
     "replica imap 127.0.0.1:$((BASE + 11)) sync 127.0.0.1:$((BASE + 13))"
