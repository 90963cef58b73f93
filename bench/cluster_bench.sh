#!/bin/bash
# Cluster LMTP delivery benchmark against Cyrus IMAP 3.6's lmtpd with replication on,
# in one session, with two clients (as root):
#
#   bench/cluster_bench.sh [--msgs N] [--start S] [--budget SEC] [--clients python,smtp-source]
#                          [--conns 1,8] [--no-cyrus] [--no-routed] [--dir DIR]
#
# Every run gets fresh instances and delivers the same range [S, S+N) (default [0, 2000))
# of the standard workload: `build/bin/workload dump` files (seed 42, 100 users), written
# once to DIR/eml_S_N. Clients:
#   python       tools/lmtp_deliver.py (smtplib.LMTP; the project's client), C connections,
#                one message in flight on each, the exact workload messages.
#   smtp-source  Postfix's C test client `smtp-source -L` (no Python in the loop): C lanes,
#                each running `smtp-source -L -d -s 1 -m n -l L -t USER` per user of its
#                share (one connection per user, n = the user's messages in the range,
#                L = their mean size less smtp-source's ~140 header bytes). Same recipients
#                and counts as the workload and about the same bytes, but not the same
#                bodies (smtp-source sends its own headers, unique Message-Ids and lines of
#                X's) -- it shows what the servers do when the client costs nothing.
# Systems, per client and connection count C (--conns, default 1 and 8):
#   Cyrus    bench/cyrus/setup.sh --fresh (Debian's packages, installed if missing): master
#            and replica on loopback, INBOXes created and replicated (`sync_client -A`), the
#            rolling `sync_client -r` running;
#            LMTP to the master's lmtpd on its unix socket, as Debian and Postfix set Cyrus up
#            (over TCP, smtp-source stalls ~30 ms per message on Cyrus: its writes of a message
#            meet Nagle and lmtpd's delayed ACKs; python shows no such stall). After the run:
#            time until the replica shows every message (IMAP LIST-STATUS).
#   ours     `replctl dev-cluster up --hosts 3 --slots-per-host 4 --net 127.0.9` (6 stores),
#            all 100 users assigned to store 1, the client sends to store 1's master;
#            async, then sync durability. After the run: time until every replica acked
#            the master's last LSN.
#   routed   (extra, python client only, unless --no-routed) the whole cluster: each user
#            to its own store's master, async and sync.
# --budget SEC (default 60): a run of ours still going after SEC seconds is stopped; its
# msg/s is then the master's LSN delta (less INBOX creations) / SEC, marked "*".
# Prints a table (msg/s, MB/s, ratio to Cyrus with the same client and C, replica drain,
# CPU busy), bars PASS/FAIL and one JSON line (prefix "JSON "); the details go to
# DIR/cluster_bench.json. DIR defaults to ${TMPDIR:-/tmp}/mailrepl-cluster-bench; Cyrus
# lives in $CYRUS_RUN (default ${TMPDIR:-/tmp}/mailrepl-cyrus). Builds build/ first if a
# binary is missing. Tears down everything it started (trap), by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TMPDIR:-/tmp}/mailrepl-cluster-bench
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export CB_ROOT=$ROOT CB_DIR=$DIR

bash "$ROOT/bench/ensure_built.sh" replctl replicad coordinatord workload

cleanup() {
  "$ROOT/bench/cyrus/teardown.sh" >/dev/null 2>&1 || true
  for d in "$DIR"/cluster_*; do
    [ -f "$d/cluster.json" ] && "$ROOT/build/bin/replctl" dev-cluster down --dir "$d" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT INT TERM

python3 - ${args[@]+"${args[@]}"} <<'PY'
import argparse, json, os, shutil, subprocess, sys, threading, time

ROOT, DIR = os.environ["CB_ROOT"], os.environ["CB_DIR"]
sys.path.insert(0, os.path.join(ROOT, "bench", "cyrus"))
import cyrus  # noqa: E402  bench/cyrus/cyrus.py
from cyrus import log  # noqa: E402

BIN = os.path.join(ROOT, "build", "bin")
REPLCTL = os.path.join(BIN, "replctl")
LMTP_DELIVER = os.path.join(ROOT, "tools", "lmtp_deliver.py")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
NET = "127.0.9"
SENDER = "bench@bench.invalid"
SMTP_SOURCE_HEADER = 140  # bytes of From/To/Date/Message-Id smtp-source adds

ap = argparse.ArgumentParser()
ap.add_argument("--msgs", type=int, default=2000)
ap.add_argument("--start", type=int, default=0)
ap.add_argument("--budget", type=float, default=60.0)
ap.add_argument("--clients", default="python,smtp-source")
ap.add_argument("--conns", default="1,8")
ap.add_argument("--no-cyrus", action="store_true")
ap.add_argument("--no-routed", action="store_true")
a = ap.parse_args()
clients = [c for c in a.clients.split(",") if c]
conns_list = [int(c) for c in a.conns.split(",") if c]
for c in clients:
    if c not in ("python", "smtp-source"):
        sys.exit("cluster_bench: unknown client %s" % c)
if "smtp-source" in clients and not os.access(SMTP_SOURCE, os.X_OK):
    sys.exit("cluster_bench: no smtp-source (Debian package postfix; scripts/deps.sh installs it)")


def load():
    return open("/proc/loadavg").read().split()[:3]


def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]


def busy_frac(s0, s1):
    t = s1[0] - s0[0]
    return round(1 - (s1[1] - s0[1]) / t, 3) if t else None


# ------------------------------------------------------------------ the workload
EML = os.path.join(DIR, "eml_%d_%d" % (a.start, a.msgs))
cyrus.dump_workload(EML, a.start, a.msgs)
MSGS = []  # (index, rcpt, size)
for i in range(a.start, a.start + a.msgs):
    p = os.path.join(EML, "%d.eml" % i)
    MSGS.append((i, cyrus.eml_recipient(p), os.path.getsize(p)))
BYTES = sum(m[2] for m in MSGS)


def write_routes(tag, lmtp):
    """A cluster.json for tools/lmtp_deliver.py sending every user to one LMTP address."""
    d = os.path.join(DIR, "routes_" + tag)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump({"stores": [{"store_id": 1, "master_lmtp": lmtp}],
                   "users": {"user%d" % u: 1 for u in range(100)}}, f)
    return d


# ------------------------------------------------------------------ the clients
def run_python(cluster_dir, conns, deadline):
    """tools/lmtp_deliver.py; None if the deadline passed (the client is killed)."""
    p = subprocess.Popen([sys.executable, LMTP_DELIVER, "--cluster", cluster_dir, "--eml-dir", EML,
                          "--start", str(a.start), "--count", str(a.msgs), "--conns", str(conns)],
                         stdout=subprocess.PIPE, text=True)
    try:
        out = p.communicate(timeout=deadline)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None
    r = json.loads(out.strip().splitlines()[-1])
    return {"delivered": r["delivered"], "errors": r["temp_failed"] + r["perm_failed"],
            "seconds": r["seconds"], "bytes": r["bytes"]}


def smtp_source_plan(conns):
    """Lanes: users spread over `conns` lanes, most messages first, to the emptiest lane."""
    per = {}
    for _, rcpt, size in MSGS:
        n, b = per.get(rcpt, (0, 0))
        per[rcpt] = (n + 1, b + size)
    lanes = [[] for _ in range(conns)]
    load_ = [0] * conns
    for rcpt, (n, b) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        k = load_.index(min(load_))
        lanes[k].append((rcpt, n, max(1, round(b / n) - SMTP_SOURCE_HEADER)))
        load_[k] += n
    return lanes


def run_smtp_source(target, conns, deadline):
    """Postfix's smtp-source -L in `conns` lanes; None if the deadline passed."""
    lanes = smtp_source_plan(conns)
    res = {"delivered": 0, "errors": 0, "bytes": 0, "first_error": None}
    lock = threading.Lock()
    procs = set()
    stop = threading.Event()

    def lane(work):
        for rcpt, n, length in work:
            if stop.is_set():
                return
            p = subprocess.Popen([SMTP_SOURCE, "-L", "-d", "-s", "1", "-m", str(n), "-l", str(length),
                                  "-f", SENDER, "-t", rcpt, "-M", "bench.invalid", target],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            with lock:
                procs.add(p)
            err = p.communicate()[1]
            with lock:
                procs.discard(p)
                if p.returncode == 0:
                    res["delivered"] += n
                    res["bytes"] += n * (length + SMTP_SOURCE_HEADER)
                else:
                    res["errors"] += n
                    res["first_error"] = res["first_error"] or err.strip()[-300:]

    threads = [threading.Thread(target=lane, args=(w,)) for w in lanes]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - (time.monotonic() - t0)))
    if any(t.is_alive() for t in threads):
        stop.set()
        with lock:
            for p in procs:
                p.kill()
        for t in threads:
            t.join()
        return None
    res["seconds"] = time.monotonic() - t0
    if res["first_error"]:
        log("smtp-source: %s" % res["first_error"])
    return res


def deliver(client, lmtp, conns, deadline, routes_tag):
    """lmtp: HOST:PORT, or the path of a unix socket."""
    if client == "python":
        # smtplib.LMTP takes a host starting with "/" for a unix socket (port unused)
        return run_python(write_routes(routes_tag, lmtp + ":0" if lmtp.startswith("/") else lmtp),
                          conns, deadline)
    return run_smtp_source(("unix:" if lmtp.startswith("/") else "inet:") + lmtp, conns, deadline)


def finish(res, conns):
    res["conns"] = conns
    res["msgs_per_s"] = res["delivered"] / res["seconds"] if res["seconds"] else 0.0
    res["MB_per_s"] = res["bytes"] / 1e6 / res["seconds"] if res["seconds"] else 0.0
    return res


# ------------------------------------------------------------------ Cyrus
def run_cyrus(client, conns):
    cyrus.fresh()
    # the replica gets the 100 new mailboxes first, so that the rolling client has
    # nothing to do but the deliveries (as in bench/cyrus/cyrus_bench.py)
    cyrus.sync_all()
    cyrus.clear_sync_log()
    rolling = cyrus.Rolling()  # replication on during delivery
    try:
        time.sleep(1)
        s0, l0 = busy(), load()
        c0 = cyrus.instance_cpu("master")
        res = deliver(client, cyrus.MASTER_LMTP_UNIX, conns, 3600, "cyrus")
        t_end = time.time()
        res["server_cpu_s"] = round(cyrus.instance_cpu("master") - c0, 2)
        res["sys_busy"], res["load_before"] = busy_frac(s0, busy()), l0
        t = cyrus.wait_replica_total(res["delivered"], timeout=120)
        res["replica_drain_s"] = round(t - t_end, 3) if t else None
        return finish(res, conns)
    finally:
        rolling.stop()
        cyrus.script("teardown.sh")


# ------------------------------------------------------------------ ours
def replctl(d, *args, check=True):
    return subprocess.run([REPLCTL, "--cluster", d] + list(args), check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout


def cluster_up(tag, durability):
    d = os.path.join(DIR, "cluster_" + tag)
    if os.path.exists(os.path.join(d, "cluster.json")):
        subprocess.run([REPLCTL, "dev-cluster", "down", "--dir", d], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)
    subprocess.run([REPLCTL, "dev-cluster", "up", "--dir", d, "--hosts", "3", "--slots-per-host", "4",
                    "--users", "100", "--durability", durability, "--net", NET],
                   check=True, stdout=subprocess.DEVNULL)
    return d


def cluster_down(d):
    subprocess.run([REPLCTL, "dev-cluster", "down", "--dir", d], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)


def host_cpu(d):
    c = json.load(open(os.path.join(d, "cluster.json")))
    tck, tot = os.sysconf("SC_CLK_TCK"), 0.0
    for h in c["hosts"]:
        try:
            f = open("/proc/%d/stat" % h["pid"]).read().rsplit(")", 1)[1].split()
            tot += (int(f[11]) + int(f[12])) / tck
        except OSError:
            pass
    return tot


def masters_lsn(d, store=None):
    st = json.loads(replctl(d, "status", "--json", check=False) or "{}")
    n = 0
    for s in st.get("stores", []):
        if store is None or s["store"]["store_id"] == str(store):
            n += sum(int(x.get("last_lsn", 0)) for x in s["slots"] if x.get("role") == "MASTER")
    return n


def wait_drain(d, timeout=120):
    t_end = time.time() + timeout
    while time.time() < t_end:
        st = json.loads(replctl(d, "status", "--json", check=False) or "{}")
        ok = bool(st.get("stores"))
        for s in st.get("stores", []):
            for sl in s.get("slots", []):
                if sl.get("role") == "MASTER":
                    for r in sl.get("replicas", []):
                        if int(r.get("acked_lsn", 0)) < int(sl.get("last_lsn", 0)):
                            ok = False
        if ok:
            return time.time()
        time.sleep(0.05)
    return None


def partial(n_records, conns):
    """A run stopped by --budget: messages = log records less one INBOX creation per user
    reached (users are reached in workload order, roughly)."""
    seen, k = set(), 0
    for _, rcpt, _ in MSGS:
        if k + len(seen) + (rcpt not in seen) > n_records:
            break
        seen.add(rcpt)
        k += 1
    return {"delivered": k, "errors": 0, "seconds": a.budget, "partial": True,
            "bytes": sum(m[2] for m in MSGS[:k])}


def run_ours(client, durability, conns, routed=False):
    d = cluster_up("%s_%s_%s%d" % ("routed" if routed else "one", client, durability, conns), durability)
    try:
        if routed:
            lmtp, routes, store = None, d, None
        else:
            replctl(d, "assign-users", "--store", "1", *["user%d" % i for i in range(100)])
            st = json.loads(replctl(d, "status", "--json"))
            s1 = [s for s in st["stores"] if s["store"]["store_id"] == "1"][0]["store"]
            lmtp = [m for m in s1["members"] if m["slot_id"] == s1["master_slot_id"]][0]["lmtp_address"]
            store = 1
        lsn0 = masters_lsn(d, store)
        cpu0, s0, l0 = host_cpu(d), busy(), load()
        if routed:
            res = run_python(d, conns, a.budget)
        else:
            res = deliver(client, lmtp, conns, a.budget, "ours")
        t_end = time.time()
        if res is None:
            res = partial(masters_lsn(d, store) - lsn0, conns)
            log("budget %.0f s expired: about %d of %d messages delivered" % (a.budget, res["delivered"], a.msgs))
        res["server_cpu_s"] = round(host_cpu(d) - cpu0, 2)
        res["sys_busy"], res["load_before"] = busy_frac(s0, busy()), l0
        res["master_lmtp"] = lmtp
        t = wait_drain(d)
        res["replica_drain_s"] = round(t - t_end, 3) if t else None
        return finish(res, conns)
    finally:
        cluster_down(d)


# ------------------------------------------------------------------ main
R = {"msgs": a.msgs, "start": a.start, "bytes": BYTES, "load_start": load(), "runs": {}, "failed": {}}


def guarded(key, fn, *args):
    """One run; a failure is recorded and the rest goes on."""
    log("%s ..." % key)
    try:
        R["runs"][key] = r = fn(*args)
        log("%s: %.1f msg/s, %d errors, replica drain %s s" % (key, r["msgs_per_s"], r["errors"],
                                                               r["replica_drain_s"]))
    except Exception as e:  # noqa: BLE001
        R["failed"][key] = repr(e)
        log("%s FAILED: %r" % (key, e))


def git_head():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True).stdout.strip()


R["git_head"] = git_head()
skip = "--no-cyrus given" if a.no_cyrus else cyrus.skip_reason()
if skip:
    log("Cyrus SKIPPED:", skip)
    R["cyrus_skipped"] = skip
elif not a.no_cyrus:
    cyrus.script("setup.sh")  # installs Cyrus if needed, before anything is timed
    cyrus.script("teardown.sh")
for client in clients:
    for c in conns_list:
        if not skip:
            guarded("cyrus/%s/-/%d" % (client, c), run_cyrus, client, c)
        for dur in ("async", "sync"):
            guarded("ours/%s/%s/%d" % (client, dur, c), run_ours, client, dur, c)
if not a.no_routed and "python" in clients:
    for dur in ("async", "sync"):
        for c in conns_list:
            guarded("routed/python/%s/%d" % (dur, c), run_ours, "python", dur, c, True)
R["load_end"] = load()

# ------------------------------------------------------------------ report
def rate(system, client, dur, c):
    r = R["runs"].get("%s/%s/%s/%d" % (system, client, dur, c))
    return r["msgs_per_s"] if r else None


print()
print("cluster_bench: %d msgs [%d, %d) per run (%.1f MB), load avg start %s end %s, %s" % (
    a.msgs, a.start, a.start + a.msgs, BYTES / 1e6, " ".join(R["load_start"]), " ".join(R["load_end"]),
    time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
print("git HEAD %s" % R["git_head"])
hdr = "%-34s %-11s %5s %8s %6s %6s %8s %8s %6s %6s" % (
    "run", "client", "conns", "msg/s", "MB/s", "errors", "vs Cyrus", "drain s", "busy", "load1")
print(hdr)
names = {"cyrus": "Cyrus lmtpd (unix, rolling repl)", "ours": "ours store 1 master %s",
         "routed": "ours whole cluster %s (extra)"}
notes = []
for k, r in R["runs"].items():
    system, client, dur, c = k.split("/")
    base = rate("cyrus", client, "-", int(c))
    ratio = r["msgs_per_s"] / base if base and system != "cyrus" and system != "routed" else None
    r["ratio_vs_cyrus"] = round(ratio, 2) if ratio else None
    name = names[system] % dur if "%s" in names[system] else names[system]
    if r.get("partial"):
        name += " *"
        notes.append("* %s: budget %.0f s expired, about %d of %d msgs acknowledged (master LSN delta "
                     "less INBOX creations)" % (k, a.budget, r["delivered"], a.msgs))
    print("%-34s %-11s %5s %8.1f %6.2f %6d %8s %8s %6s %6s" % (
        name, client, c, r["msgs_per_s"], r["MB_per_s"], r["errors"], ("%.2fx" % ratio) if ratio else "-",
        r.get("replica_drain_s"), r.get("sys_busy"), r["load_before"][0]))
for n_ in notes:
    print(n_)
for k, e in R["failed"].items():
    print("FAILED %s: %s" % (k, e))
if R["git_head"] != git_head():
    print("WARNING: HEAD moved during the run (%s -> %s)" % (R["git_head"], git_head()))
print()
R["bars"] = {}
for client in clients:
    for dur, c, f in (("async", 1, 3.0), ("async", 8, 5.0), ("sync", 1, 2.0), ("sync", 8, 2.0)):
        if c not in conns_list:
            continue
        name = "%s: %s %d conn >= %gx Cyrus" % (client, dur, c, f)
        ours, base = rate("ours", client, dur, c), rate("cyrus", client, "-", c)
        if base is None or ours is None:
            R["bars"][name] = None
            verdict = "n/a (%s not measured)" % ("Cyrus" if base is None else "ours")
        else:
            R["bars"][name] = ok = ours >= f * base
            verdict = "%s  (%.1f vs need %.1f = %gx%.1f; got %.2fx)" % (
                "PASS" if ok else "FAIL", ours, f * base, f, base, ours / base)
        print("BAR %-38s %s" % (name, verdict))
with open(os.path.join(DIR, "cluster_bench.json"), "w") as f:
    json.dump(R, f, indent=1)
print("JSON " + json.dumps({"msgs": a.msgs, "start": a.start, "load_start": R["load_start"],
                            "load_end": R["load_end"],
                            "msgs_per_s": {k: round(r["msgs_per_s"], 1) for k, r in R["runs"].items()},
                            "cyrus_skipped": R.get("cyrus_skipped"), "failed": R["failed"],
                            "git_head": R["git_head"], "bars": R["bars"]}))
PY
