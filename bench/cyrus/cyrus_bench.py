#!/usr/bin/env python3
"""Cyrus IMAP 3.6's own replication on the standard workload: the reference
figures of `build/bin/sync_bench --cyrus OUT` (run through bench/cyrus/run.sh).

usage: cyrus_bench.py [--runs N] [--msgs M] [--extra X] [--conns C]
                      [--lag-rate R] [--samples S] [--eml-dir DIR] [--out OUT]

Messages are `build/bin/workload dump` files (seed 42, 100 users; the same
generator sync_bench uses, so the same bytes), delivered over LMTP to the
master's lmtpd (its unix socket) by tools/lmtp_deliver.py (the project's client,
smtplib.LMTP) except where a per-message time is needed (part c, a paced
smtplib.LMTP loop here).

Per run, on a fresh pair (bench/cyrus/setup.sh --fresh, INBOXes created):
  a  deliver messages [0, M) on 1 connection (sync_log on, no sync_client
     running): LMTP msg/s; then `sync_client -A` to the empty replica, timed
     (wall; client CPU from rusage; replica CPU from /proc), and checked: every
     mailbox has the same MESSAGES, UIDNEXT, UIDVALIDITY on both.
  b  sync log emptied, rolling `sync_client -r` started (bench/cyrus/rolling.sh);
     [M, M+X) at full speed on C connections; time from the client's end to the
     replica holding every message (one LIST-STATUS every 50 ms).
  c  [M+X, M+2X) on one connection paced at R msg/s; S messages spread evenly
     are samples: the time of their 250, then their mailbox's STATUS MESSAGES on
     the replica every 10 ms until it includes them; lag = visible - 250.
  d  replica stopped (bench/cyrus/teardown.sh replica); [M+2X, M+3X) on C
     connections; if the rolling client died meanwhile (Cyrus 3.6's does when its
     replica goes away) it is started again, as cyrus.conf's supervisor would;
     replica restarted (setup.sh --start replica); time from the restart (and from
     its sync port answering) until the replica holds everything.
Writes OUT/run<N>.json and OUT/summary.json ({figure: {median, min, max}}, the
file sync_bench --cyrus reads), prints the table. OUT defaults to
${TMPDIR:-/tmp}/mailrepl-cyrus-out. Needs root; stops what it started.
"""
import argparse
import json
import os
import queue
import smtplib
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cyrus  # noqa: E402
from cyrus import log  # noqa: E402

TMP = os.environ.get("TMPDIR") or "/tmp"


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def paced_lag(eml_dir, start, count, rate, samples):
    """Part c: one connection at `rate` msg/s; lag of `samples` messages."""
    msgs = []
    for i in range(start, start + count):
        with open(os.path.join(eml_dir, "%d.eml" % i), "rb") as f:
            data = f.read()
        rcpt = cyrus.eml_recipient(os.path.join(eml_dir, "%d.eml" % i))
        msgs.append((rcpt, "user." + rcpt.split("@")[0], data))
    every = max(1, count // samples)
    pending = queue.Queue()
    lags = []
    done = threading.Event()
    im = cyrus.Imap(cyrus.REPLICA_IMAP)
    running = {k: v["MESSAGES"] for k, v in im.status_all().items()}
    im.close()

    def poller():
        im = cyrus.Imap(cyrus.REPLICA_IMAP)
        waiting = []
        while not (done.is_set() and not waiting and pending.empty()):
            while not pending.empty():
                waiting.append(pending.get())
            seen = {}
            still = []
            for box, need, t250 in waiting:
                if box not in seen:
                    seen[box] = (im.messages(box), time.time())
                n, t = seen[box]
                if n >= need:
                    lags.append(t - t250)
                else:
                    still.append((box, need, t250))
            waiting = still
            time.sleep(0.01)
        im.close()

    th = threading.Thread(target=poller)
    th.start()
    c = smtplib.LMTP(cyrus.MASTER_LMTP_UNIX)
    c.ehlo("cyrus-bench")
    t0 = time.monotonic()
    for j, (rcpt, box, data) in enumerate(msgs):
        delay = t0 + j / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        c.sendmail("bench@bench.invalid", [rcpt], data)
        t250 = time.time()
        running[box] = running.get(box, 0) + 1
        if j % every == every - 1:
            pending.put((box, running[box], t250))
    seconds = time.monotonic() - t0
    c.quit()
    done.set()
    th.join()
    return {"achieved_msgs_per_s": count / seconds, "samples": len(lags),
            "p50_s": pct(lags, 50), "p99_s": pct(lags, 99), "max_s": max(lags) if lags else float("nan"),
            "lags_s": [round(x, 4) for x in sorted(lags)]}


def burst_lag_outage(R, a, total, rolling):
    """Parts b, c and d, with the rolling client running; total = messages so far."""
    M, X = a.msgs, a.extra
    d = cyrus.lmtp_deliver(a.eml_dir, M, X, a.conns)
    total += d["delivered"]
    t = cyrus.wait_replica_total(total)
    d["drain_s"] = (t - d["wall_end"]) if t else float("nan")
    R["burst"] = d
    log("b: %d msgs on %d connections: %.1f msg/s; replica complete %.3f s after the last 250" % (
        d["delivered"], a.conns, d["msgs_per_s"], d["drain_s"]))
    # c: lag at a steady rate
    time.sleep(1)
    c0 = cyrus.process_cpu(rolling.pid())
    c = paced_lag(a.eml_dir, M + X, X, a.lag_rate, a.samples)
    c1 = cyrus.process_cpu(rolling.pid())
    c["rolling_client_cpu_s"] = (c1 - c0) if c0 is not None and c1 is not None else None
    total += X
    cyrus.wait_replica_total(total)
    R["lag"] = c
    log("c: %.1f msg/s, lag p50 %.3f s p99 %.3f s max %.3f s (%d samples)" % (
        c["achieved_msgs_per_s"], c["p50_s"], c["p99_s"], c["max_s"], c["samples"]))
    # d: catch-up after a replica outage
    time.sleep(1)
    restarts0 = rolling.restarts
    cyrus.script("teardown.sh", "replica")
    d = cyrus.lmtp_deliver(a.eml_dir, M + 2 * X, X, a.conns)
    total += d["delivered"]
    time.sleep(3)  # a few sync_repeat_intervals with the replica gone
    R["rolling_alive_while_down"] = rolling.restarts == restarts0
    t_restart = time.time()
    cyrus.script("setup.sh", "--start", "replica")
    t_listening = time.time()
    t = cyrus.wait_replica_total(total, timeout=120)
    R["catchup"] = {"msgs": d["delivered"], "deliver_msgs_per_s": d["msgs_per_s"],
                    "from_restart_s": (t - t_restart) if t else float("nan"),
                    "from_listening_s": (t - t_listening) if t else float("nan"),
                    "rolling_restarts": rolling.restarts - restarts0}
    R["catchup"]["msgs_per_s"] = d["delivered"] / R["catchup"]["from_restart_s"]
    log("d: replica caught up %.3f s after its restart (%.3f s after listening); rolling client "
        "restarts %d" % (R["catchup"]["from_restart_s"], R["catchup"]["from_listening_s"],
                         R["catchup"]["rolling_restarts"]))


def one_run(n, a):
    R = {"run": n, "msgs": a.msgs, "extra": a.extra, "load_start": load()}
    M = a.msgs
    log("run %d: fresh Cyrus pair" % n)
    cyrus.fresh()
    # a: LMTP delivery, then the initial full sync
    d = cyrus.lmtp_deliver(a.eml_dir, 0, M, 1)
    R["deliver_1conn"] = d
    log("a: delivered %d on 1 connection: %.1f msg/s" % (d["delivered"], d["msgs_per_s"]))
    s = cyrus.sync_all()
    v = cyrus.compare()
    s.update(msgs=v["replica_messages"], bytes=cyrus.eml_bytes(a.eml_dir, 0, M), compare=v)
    R["initial_sync"] = s
    log("a: sync_client -A: %.2f s, %.0f msg/s; master %d replica %d messages, %d mailboxes differ" % (
        s["seconds"], v["replica_messages"] / s["seconds"], v["master_messages"], v["replica_messages"],
        v["differing_mailboxes"]))
    # b: rolling replication under a burst
    cyrus.clear_sync_log()
    rolling = cyrus.Rolling()
    try:
        burst_lag_outage(R, a, v["master_messages"], rolling)
    finally:
        rolling.stop()
    R["final_compare"] = cyrus.compare()
    R["load_end"] = load()
    with open(os.path.join(a.out, "run%d.json" % n), "w") as f:
        json.dump(R, f, indent=1)
    return R


# figure -> how to read it from one run (the names sync_bench --cyrus looks up)
FIGURES = [
    ("lmtp 1 conn msg/s", lambda r: r["deliver_1conn"]["msgs_per_s"]),
    ("initial sync s", lambda r: r["initial_sync"]["seconds"]),
    ("initial sync msg/s", lambda r: r["initial_sync"]["msgs"] / r["initial_sync"]["seconds"]),
    ("initial sync MB/s", lambda r: r["initial_sync"]["bytes"] / 1e6 / r["initial_sync"]["seconds"]),
    ("initial sync client CPU s", lambda r: r["initial_sync"]["client_cpu_s"]),
    ("initial sync replica CPU s", lambda r: r["initial_sync"]["replica_cpu_s"]),
    ("burst lmtp msg/s", lambda r: r["burst"]["msgs_per_s"]),
    ("burst last 250 -> all on replica s", lambda r: r["burst"]["drain_s"]),
    ("lag achieved rate msg/s", lambda r: r["lag"]["achieved_msgs_per_s"]),
    ("lag p50 s", lambda r: r["lag"]["p50_s"]),
    ("lag p99 s", lambda r: r["lag"]["p99_s"]),
    ("lag max s", lambda r: r["lag"]["max_s"]),
    ("catch-up from restart s", lambda r: r["catchup"]["from_restart_s"]),
    ("catch-up from listening s", lambda r: r["catchup"]["from_listening_s"]),
    ("catch-up msg/s", lambda r: r["catchup"]["msgs_per_s"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--msgs", type=int, default=10000, help="M: messages of the initial sync")
    ap.add_argument("--extra", type=int, default=2000, help="X: messages of parts b, c and d each")
    ap.add_argument("--conns", type=int, default=4, help="C: LMTP connections in parts b and d")
    ap.add_argument("--lag-rate", type=float, default=100.0, help="R: msg/s of part c")
    ap.add_argument("--samples", type=int, default=100, help="S: lag samples in part c")
    ap.add_argument("--eml-dir", default=os.path.join(TMP, "mailrepl-eml"))
    ap.add_argument("--out", default=os.path.join(TMP, "mailrepl-cyrus-out"))
    a = ap.parse_args()
    if cyrus.skip_reason():
        sys.exit("cyrus_bench: " + cyrus.skip_reason())
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.startswith("run") and f.endswith(".json"):
            os.unlink(os.path.join(a.out, f))
    cyrus.dump_workload(a.eml_dir, 0, a.msgs + 3 * a.extra)
    runs = []
    try:
        for n in range(1, a.runs + 1):
            runs.append(one_run(n, a))
    finally:
        cyrus.script("teardown.sh")
    summary = {}
    for name, get in FIGURES:
        xs = [v for v in (get(r) for r in runs) if v == v]
        summary[name] = ({"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs
                         else {"median": float("nan"), "min": float("nan"), "max": float("nan")})
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    w = max(len(k) for k, _ in FIGURES)
    print("Cyrus 3.6 replication, %d run(s), M=%d X=%d, %d conns, lag at %.0f msg/s; load at start %s" % (
        a.runs, a.msgs, a.extra, a.conns, a.lag_rate, " / ".join(r["load_start"][0] for r in runs)))
    print("%-*s %10s %10s %10s" % (w, "figure", "median", "min", "max"))
    for name, _ in FIGURES:
        v = summary[name]
        print("%-*s %10.3f %10.3f %10.3f" % (w, name, v["median"], v["min"], v["max"]))
    for r in runs:
        fc = r["final_compare"]
        print("run %d: master %d, replica %d messages, %d mailboxes differ; rolling client alive "
              "while the replica was down: %s" % (r["run"], fc["master_messages"], fc["replica_messages"],
                                                  fc["differing_mailboxes"], r["rolling_alive_while_down"]))
    print("written: %s/summary.json, run1..%d.json" % (a.out, a.runs))


if __name__ == "__main__":
    main()
