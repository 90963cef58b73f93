#!/usr/bin/env python3
"""Delivers the standard workload into a cluster over LMTP with Python's
smtplib.LMTP (a real client), each message to its user's store master.

usage: lmtp_deliver.py --cluster DIR --eml-dir D [--start S] [--count N]
                       [--conns C] [--retry SECONDS] [--record FILE]
                       [--lookup REPLCTL]

D holds <index>.eml files (`workload dump --dir D`); the recipient is the
To: header. Routes come from DIR/cluster.json (user -> store -> master's
LMTP address); with --lookup, a 4xx answer makes the client ask the
coordinator (`REPLCTL --cluster DIR lookup USER --json`) where the user's
master is now, as an MTA's transport lookup would, and retry there.
C worker threads share the messages (worker k takes k, k+C, ...); each
keeps one connection per master it talks to and has one message in
flight at a time, so C is the number of concurrent deliveries.
--retry T: answers 4xx are retried (after 50 ms, then 100 ms...) for up to
T seconds per message; 0 = no retry.
--record F: one line per message: "INDEX USER CODE" (CODE 250 = acknowledged).
Prints one JSON line: delivered, temp_failed, perm_failed, retries, seconds,
msgs_per_s, bytes. Exit 0 if every message was acknowledged, else 1.
"""
import argparse, json, os, smtplib, subprocess, sys, threading, time

def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--eml-dir", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--retry", type=float, default=0.0)
    ap.add_argument("--record")
    ap.add_argument("--lookup")
    ap.add_argument("--sender", default="bench@bench.invalid")
    return ap.parse_args()

def recipient(msg):
    for line in msg.split(b"\r\n"):
        if line == b"":
            break
        if line.lower().startswith(b"to:"):
            return line[3:].strip().decode()
    raise ValueError("message without To:")

class Router:
    def __init__(self, args):
        self.args = args
        cluster = json.load(open(os.path.join(args.cluster, "cluster.json")))
        masters = {int(s["store_id"]): s["master_lmtp"] for s in cluster["stores"]}
        self.routes = {u: masters[int(st)] for u, st in cluster["users"].items()}
        self.lock = threading.Lock()

    def route(self, user):
        with self.lock:
            return self.routes.get(user)

    def refresh(self, user):
        if not self.args.lookup:
            return
        r = subprocess.run([self.args.lookup, "--cluster", self.args.cluster, "lookup", user, "--json"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            lmtp = json.loads(r.stdout).get("master", {}).get("lmtp_address")
            if lmtp:
                with self.lock:
                    self.routes[user] = lmtp

def main():
    args = parse()
    router = Router(args)
    results = {}
    stats = {"retries": 0, "bytes": 0}
    stats_lock = threading.Lock()

    def worker(k):
        conns = {}
        def conn(addr):
            if addr not in conns:
                host, port = addr.rsplit(":", 1)
                conns[addr] = smtplib.LMTP(host, int(port), timeout=60)
                conns[addr].ehlo_or_helo_if_needed()
            return conns[addr]
        for i in range(args.start + k, args.start + args.count, args.conns):
            msg = open(os.path.join(args.eml_dir, "%d.eml" % i), "rb").read()
            rcpt = recipient(msg)
            user = rcpt.split("@")[0].split("+")[0].lower()
            deadline = time.monotonic() + args.retry
            pause = 0.05
            while True:
                addr = router.route(user)
                code = 0
                try:
                    c = conn(addr)
                    code, _ = c.mail(args.sender)
                    if code == 250:
                        code, _ = c.rcpt(rcpt)
                    if code == 250:
                        code, _ = c.data(msg)
                    else:
                        c.rset()
                except (smtplib.SMTPException, OSError) as e:
                    conns.pop(addr, None)
                    code = 421
                if code == 250 or code >= 500 or time.monotonic() + pause > deadline:
                    break
                with stats_lock:
                    stats["retries"] += 1
                time.sleep(pause)  # the retry pause an MTA would take, not a wait for a condition
                pause = min(pause * 2, 1.0)
                router.refresh(user)
            with stats_lock:
                results[i] = (user, code)
                if code == 250:
                    stats["bytes"] += len(msg)
        for c in conns.values():
            try:
                c.quit()
            except Exception:
                pass

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    delivered = sum(1 for u, c in results.values() if c == 250)
    temp = sum(1 for u, c in results.values() if 400 <= c < 500)
    perm = sum(1 for u, c in results.values() if c >= 500)
    if args.record:
        with open(args.record, "w") as f:
            for i in sorted(results):
                f.write("%d %s %d\n" % (i, results[i][0], results[i][1]))
    print(json.dumps({"delivered": delivered, "temp_failed": temp, "perm_failed": perm,
                      "retries": stats["retries"], "seconds": round(seconds, 3),
                      "msgs_per_s": round(delivered / seconds, 1) if seconds > 0 else 0,
                      "bytes": stats["bytes"], "conns": args.conns}))
    return 0 if delivered == args.count else 1

if __name__ == "__main__":
    sys.exit(main())
