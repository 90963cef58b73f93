#!/bin/bash
# Cluster LMTP delivery benchmark vs Cyrus IMAP lmtpd with replication on, in one session.
#
#   bench/cluster_bench.sh [--msgs N] [--start S] [--budget SEC] [--no-cyrus] [--no-routed] [--out DIR]
#   (--budget, default 60: a run of ours still going after SEC seconds is stopped; its msg/s is then
#   the LSN delta of the master(s) / SEC, marked "partial" -- sync mode can need this)
#
# Runs, in this order, each on fresh instances, the same message range [S, S+N) of the
# standard workload (anchor workload.py, seed 42, 100 users):
#   1. Cyrus 3.6 (anchor /work/shared/anchors/cyrus): master + replica, sync_log on and the
#      rolling `sync_client -r` running during delivery; `workload.py deliver --unix <lmtp socket>`
#      with 1 and 8 connections (the anchor's own client and socket; TCP lmtpd wants AUTH EXTERNAL).
#   2. ours, async: `replctl dev-cluster up --hosts 3 --slots-per-host 4 --net 127.0.9`, all 100
#      users assigned to store 1, `workload.py deliver --host <store 1 master> --port 2424`
#      with 1 and 8 connections (fresh cluster per run: Cyrus suppresses duplicate Message-IDs,
#      so every run gets empty mailboxes on both sides).
#   3. ours, sync: the same with --durability sync.
#   4. extra (unless --no-routed): the whole cluster (6 stores) with tools/lmtp_deliver.py,
#      messages from `build/bin/workload dump` (NOTE: not byte-identical to workload.py's: other
#      To: header and ~19% fewer bytes), async and sync, 1 and 8 connections.
# After each of our runs it waits until every replica has acked the master's last LSN (drain time
# reported, not part of msg/s); after each Cyrus run until the replica shows every message.
# Prints a table (msg/s, ratio vs Cyrus, bars PASS/FAIL) and one JSON line (prefix "JSON ").
# Needs root (Cyrus runs as user cyrus). Scratch: /work/benchdirs/cb_*, /var/tmp/cb_*.
# Always tears down what it started (trap).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANCHOR=${CYRUS_ANCHOR:-/work/shared/anchors/cyrus}
export CYRUS_RUN=${CYRUS_RUN:-/var/tmp/cb_cyrus_run}
export CB_ROOT=$ROOT CB_ANCHOR=$ANCHOR
export CB_DIRS=${CB_DIRS:-/work/benchdirs/cb}

cleanup() {
  if [[ -x $ANCHOR/teardown.sh ]]; then "$ANCHOR/teardown.sh" >/dev/null 2>&1 || true; fi
  for d in "$CB_DIRS"_*; do
    [[ -f $d/cluster.json ]] && "$ROOT/build/bin/replctl" dev-cluster down --dir "$d" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT INT TERM

for b in replctl replicad coordinatord workload; do
  [[ -x $ROOT/build/bin/$b ]] || { echo "missing $ROOT/build/bin/$b (ninja -C $ROOT/build replctl replicad coordinatord workload -j2)" >&2; exit 2; }
done

python3 - "$@" <<'PY'
import argparse, json, os, subprocess, sys, time, shutil

ROOT, ANCHOR, DIRS = os.environ["CB_ROOT"], os.environ["CB_ANCHOR"], os.environ["CB_DIRS"]
BIN = os.path.join(ROOT, "build/bin")
REPLCTL = os.path.join(BIN, "replctl")
WL = os.path.join(ANCHOR, "workload.py")
NET = "127.0.9"

ap = argparse.ArgumentParser()
ap.add_argument("--msgs", type=int, default=2000)
ap.add_argument("--start", type=int, default=0)
ap.add_argument("--no-cyrus", action="store_true")
ap.add_argument("--no-routed", action="store_true")
ap.add_argument("--out", default="/var/tmp/cb_out")
ap.add_argument("--budget", type=float, default=60.0,
                help="max seconds per run of ours; on expiry the client is stopped and msg/s = "
                     "messages the master logged (LSN delta) / budget, marked partial")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

def log(*x):
    print("[%s]" % time.strftime("%H:%M:%S"), *x, file=sys.stderr, flush=True)

def load():
    return open("/proc/loadavg").read().split()[:3]

def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + v[4]

def busy_frac(s0, s1):
    t = s1[0] - s0[0]
    return round(1 - (s1[1] - s0[1]) / t, 3) if t else None

R = {"msgs": a.msgs, "start": a.start, "load_start": load(), "runs": {}}

# ------------------------------------------------------------------ Cyrus
def cyrus_skip_reason():
    if not os.path.exists(os.path.join(ANCHOR, "bench.py")):
        return "anchor not found at %s" % ANCHOR
    for b in ("master", "lmtpd", "sync_client", "sync_server"):
        if not os.access("/usr/lib/cyrus/bin/" + b, os.X_OK):
            return "/usr/lib/cyrus/bin/%s missing (install per %s/setup.sh: cyrus-imapd cyrus-replication ...)" % (b, ANCHOR)
    if os.geteuid() != 0:
        return "needs root"
    return None

def run_cyrus(conns):
    sys.path.insert(0, ANCHOR)
    import bench as cb, workload as cw  # the anchor's own helpers (CYRUS_RUN honoured)
    wl = cw.Workload()
    cb.fresh(); cb.create()
    pid = cb.start_rolling()                 # replication on: rolling sync_client running
    time.sleep(2)
    im = cb.Imap(cb.R_IMAP); base = im.counts(); im.close()
    c0, s0, l0 = cb.inst_cpu("master"), busy(), load()
    res = cb.deliver(a.start, a.msgs, conns=conns)
    res["master_cpu_s"] = cb.cpu_delta(c0, cb.inst_cpu("master"))["total"]
    res["sys_busy"] = busy_frac(s0, busy())
    res["load_before"] = l0
    exp = cb.expected_counts(base, a.start, a.msgs, wl)
    t_done, _ = cb.wait_counts(exp, timeout=120)
    res["replica_drain_s"] = round(t_done - res["wall_last_250"], 3) if t_done else None
    cb.stop_rolling(pid)
    subprocess.run([os.path.join(ANCHOR, "teardown.sh")], stdout=subprocess.DEVNULL)
    return res

# ------------------------------------------------------------------ ours
def replctl(d, *args, check=True):
    return subprocess.run([REPLCTL, "--cluster", d] + list(args), check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout

def cluster_up(tag, durability):
    d = "%s_%s" % (DIRS, tag)
    if os.path.exists(os.path.join(d, "cluster.json")):
        subprocess.run([REPLCTL, "dev-cluster", "down", "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)
    subprocess.run([REPLCTL, "dev-cluster", "up", "--dir", d, "--hosts", "3", "--slots-per-host", "4",
                    "--users", "100", "--durability", durability, "--net", NET],
                   check=True, stdout=subprocess.DEVNULL)
    return d

def cluster_down(d):
    subprocess.run([REPLCTL, "dev-cluster", "down", "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

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

def wait_drain(d, timeout=120):
    t_end = time.time() + timeout
    while time.time() < t_end:
        st = json.loads(replctl(d, "status", "--json", check=False) or "{}")
        ok = True
        for s in st.get("stores", []):
            for sl in s.get("slots", []):
                if sl.get("role") == "MASTER":
                    for r in sl.get("replicas", []):
                        if int(r.get("acked_lsn", 0)) < int(sl.get("last_lsn", 0)):
                            ok = False
        if ok and st.get("stores"):
            return time.time()
        time.sleep(0.05)
    return None

def autocreated(n):
    """INBOX autocreate records among the first messages: one per distinct user reached."""
    sys.path.insert(0, ANCHOR)
    import workload as cw
    plan, seen, k = cw.Workload().plan(a.start + a.msgs)[a.start:], set(), 0
    for u, _, _ in plan:  # log records = messages + distinct users so far
        if k + len(seen) + (u not in seen) > n:
            break
        seen.add(u); k += 1
    return len(seen)

def master_lsn(d):
    st = json.loads(replctl(d, "status", "--json"))
    for s in st["stores"]:
        if s["store"]["store_id"] == "1":
            return int([x for x in s["slots"] if x["role"] == "MASTER"][0]["last_lsn"])

def run_ours(durability, conns):
    d = cluster_up("%s%d" % (durability, conns), durability)
    try:
        users = ["user%d" % i for i in range(100)]
        replctl(d, "assign-users", "--store", "1", *users)
        st = json.loads(replctl(d, "status", "--json"))
        s1 = [s for s in st["stores"] if s["store"]["store_id"] == "1"][0]["store"]
        master = [m for m in s1["members"] if m["slot_id"] == s1["master_slot_id"]][0]["lmtp_address"]
        host, port = master.rsplit(":", 1)
        lsn0 = master_lsn(d)
        cpu0, s0, l0 = host_cpu(d), busy(), load()
        w0 = time.time()
        p = subprocess.Popen([sys.executable, WL, "deliver", "--host", host, "--port", port, "--conns", str(conns),
                              "--start", str(a.start), "--count", str(a.msgs)], stdout=subprocess.PIPE, text=True)
        try:
            out = p.communicate(timeout=a.budget)[0]
            res = json.loads(out.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            p.kill(); p.communicate()
            n = master_lsn(d) - lsn0
            n -= autocreated(n)
            res = {"delivered": n, "errors": 0, "conns": conns, "elapsed_s": a.budget,
                   "msgs_per_s": round(n / a.budget, 2), "partial": True, "wall_last_250": time.time()}
            log("budget %.0f s expired: %d of %d messages delivered" % (a.budget, n, a.msgs))
        res["replicad_cpu_s"] = round(host_cpu(d) - cpu0, 2)
        res["sys_busy"] = busy_frac(s0, busy())
        res["load_before"] = l0
        res["master_lmtp"] = master
        t = wait_drain(d)
        res["replica_drain_s"] = round(t - res["wall_last_250"], 3) if t else None
        if res.get("errors"):
            log("delivery errors:", res.get("first_errors"))
        return res
    finally:
        cluster_down(d)

def run_routed(durability, conns, emldir):
    d = cluster_up("r%s%d" % (durability, conns), durability)
    try:
        st = json.loads(replctl(d, "status", "--json"))
        lsn0 = sum(int([x for x in s["slots"] if x["role"] == "MASTER"][0]["last_lsn"]) for s in st["stores"])
        s0, l0 = busy(), load()
        w0 = time.time()
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools/lmtp_deliver.py"), "--cluster", d,
                              "--eml-dir", emldir, "--start", str(a.start), "--count", str(a.msgs),
                              "--conns", str(conns)], stdout=subprocess.PIPE, text=True)
        try:
            out = p.communicate(timeout=a.budget)[0]
            res = json.loads(out.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            p.kill(); p.communicate()
            st = json.loads(replctl(d, "status", "--json"))
            n = sum(int([x for x in s["slots"] if x["role"] == "MASTER"][0]["last_lsn"]) for s in st["stores"]) - lsn0
            n -= autocreated(n)
            res = {"delivered": n, "conns": conns, "seconds": a.budget, "msgs_per_s": round(n / a.budget, 2), "partial": True}
            log("budget %.0f s expired: %d of %d messages delivered" % (a.budget, n, a.msgs))
        res["sys_busy"] = busy_frac(s0, busy())
        res["load_before"] = l0
        t = wait_drain(d)
        res["replica_drain_s"] = round(t - (w0 + res["seconds"]), 3) if t else None
        return res
    finally:
        cluster_down(d)

# ------------------------------------------------------------------ main
R["failed"] = {}
def guarded(key, fn, *args):
    """One run; a failure (e.g. a binary being rebuilt under us) is recorded, the rest goes on."""
    try:
        R["runs"][key] = r = fn(*args)
        return r
    except Exception as e:  # noqa: BLE001
        R["failed"][key] = repr(e)
        log("%s FAILED: %r" % (key, e))
        return None

def git_head():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, text=True)
    return r.stdout.strip()
R["git_head"] = git_head()
R["binaries_mtime"] = {b: time.strftime("%H:%M:%S", time.gmtime(os.path.getmtime(os.path.join(BIN, b))))
                       for b in ("replicad", "replctl", "coordinatord")}
skip = "--no-cyrus given" if a.no_cyrus else cyrus_skip_reason()
if skip:
    log("Cyrus SKIPPED:", skip)
    R["cyrus_skipped"] = skip
else:
    for c in (1, 8):
        log("cyrus conns=%d ..." % c)
        r = guarded("cyrus_%d" % c, run_cyrus, c)
        if r: log("cyrus conns=%d: %s msg/s (drain %s s)" % (c, r["msgs_per_s"], r["replica_drain_s"]))
for dur in ("async", "sync"):
    for c in (1, 8):
        log("ours %s conns=%d ..." % (dur, c))
        r = guarded("ours_%s_%d" % (dur, c), run_ours, dur, c)
        if r: log("ours %s conns=%d: %s msg/s errors %s (drain %s s)" % (dur, c, r["msgs_per_s"], r["errors"], r["replica_drain_s"]))
if not a.no_routed:
    emldir = "/var/tmp/cb_eml_%d_%d" % (a.start, a.msgs)
    if not os.path.exists(os.path.join(emldir, "%d.eml" % (a.start + a.msgs - 1))):
        subprocess.run([os.path.join(BIN, "workload"), "dump", "--dir", emldir, "--start", str(a.start),
                        "--count", str(a.msgs)], check=True, stdout=subprocess.DEVNULL)
    for dur in ("async", "sync"):
        for c in (1, 8):
            log("ours routed %s conns=%d ..." % (dur, c))
            r = guarded("routed_%s_%d" % (dur, c), run_routed, dur, c, emldir)
            if r: log("routed %s conns=%d: %s msg/s" % (dur, c, r["msgs_per_s"]))
R["load_end"] = load()

# ------------------------------------------------------------------ report
def rate(k):
    r = R["runs"].get(k)
    return r["msgs_per_s"] if r and (r.get("errors", 0) == 0 and r.get("temp_failed", 0) == 0) else (r["msgs_per_s"] if r else None)

cy = {c: rate("cyrus_%d" % c) for c in (1, 8)}
bars = [("async 1 conn >= 3x Cyrus 1 conn", "ours_async_1", 1, 3.0),
        ("async 8 conn >= 5x Cyrus 8 conn", "ours_async_8", 8, 5.0),
        ("sync 1 conn >= 2x Cyrus 1 conn", "ours_sync_1", 1, 2.0),
        ("sync 8 conn >= 2x Cyrus 8 conn", "ours_sync_8", 8, 2.0)]
R["bars"] = {}
print()
print("cluster_bench: %d msgs [%d, %d) per run, load avg start %s end %s, %s" % (
    a.msgs, a.start, a.start + a.msgs, " ".join(R["load_start"]), " ".join(R["load_end"]), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
print("git HEAD %s; binaries built (UTC) %s" % (R["git_head"], R["binaries_mtime"]))
print("%-40s %5s %9s %7s %9s %8s %6s %9s" % ("run", "conns", "msg/s", "errors", "vs Cyrus", "drain s", "busy", "load1"))
notes = []
for k, r in R["runs"].items():
    c = r.get("conns")
    ratio = (r["msgs_per_s"] / cy[c]) if cy.get(c) else None
    r["ratio_vs_cyrus"] = round(ratio, 2) if ratio else None
    errs = r.get("errors", r.get("temp_failed", 0) + r.get("perm_failed", 0))
    name = {"cyrus": "Cyrus lmtpd (unix sock, repl on)", "ours": "ours store1 master (TCP)",
            "routed": "ours whole cluster, routed (extra)"}[k.split("_")[0]]
    if not k.startswith("cyrus"):
        name += " " + k.split("_")[-2]
    if r.get("partial"):
        name += " *"
        notes.append("* %s %s conns=%d: budget %.0f s expired, %d of %d msgs acknowledged (master LSN delta minus INBOX autocreates)" % (k.split("_")[0], k.split("_")[1], c, a.budget, r["delivered"], a.msgs))
    print("%-40s %5s %9.1f %7s %9s %8s %6s %9s" % (name, c, r["msgs_per_s"], errs,
          ("%.2fx" % ratio) if ratio else "-", r.get("replica_drain_s"), r.get("sys_busy"), r["load_before"][0]))
for n_ in notes:
    print(n_)
for k, e in R["failed"].items():
    print("FAILED %s: %s" % (k, e))
if R["git_head"] != git_head():
    print("WARNING: HEAD moved during the run (%s -> %s)" % (R["git_head"], git_head()))
print()
for name, k, c, f in bars:
    ours, base = rate(k), cy.get(c)
    if base is None or ours is None:
        verdict = "n/a (%s not measured)" % ("Cyrus" if base is None else k)
        R["bars"][name] = None
    else:
        ok = ours >= f * base
        R["bars"][name] = ok
        verdict = "%s  (%.1f vs need %.1f = %.1fx%.1f; got %.2fx)" % ("PASS" if ok else "FAIL", ours, f * base, f, base, ours / base)
    print("BAR %-34s %s" % (name, verdict))
with open(os.path.join(a.out, "cluster_bench.json"), "w") as f:
    json.dump(R, f, indent=1)
print("JSON " + json.dumps({"msgs": a.msgs, "start": a.start, "load_start": R["load_start"], "load_end": R["load_end"],
                            "msgs_per_s": {k: r["msgs_per_s"] for k, r in R["runs"].items()},
                            "cyrus_skipped": R.get("cyrus_skipped"), "failed": R["failed"], "git_head": R["git_head"],
                            "bars": R["bars"]}))
PY
