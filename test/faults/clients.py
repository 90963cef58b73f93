#!/usr/bin/env python3
"""LMTP clients of a fault-injection run. Run inside the client namespace:

    clients.py --spec SPEC.json --history OUT.jsonl --stop-file F

SPEC: {"run": ID, "sender": ADDR, "clients_per_store": C, "interval": S,
       "max_attempts": N, "timeout": S, "lookup": [argv of replctl ...] or null,
       "stores": {"1": {"users": [...], "members": [LMTP ADDR, ...], "master": ADDR}}}

Per store C threads, each delivering unique messages (smtplib.LMTP, a new
connection per attempt) to the store's users every `interval` seconds until
F exists or SIGTERM. Client 0 of a store is "sticky" (it keeps the address
that last answered 250, like an MTA with a stale route); the others ask
the coordinator where the master is before each message (`lookup`, like
Postfix's socketmap), when given. On a 4xx naming the master ("the
master's LMTP is at ADDR") a client goes there; on another 4xx or a
connection failure it rotates over the store's member slots. A message
is attempted at most max_attempts times; each attempt is one history
line (JSONL):

  id, attempt, retry (attempt > 1), store, user, client, addr, send, answer
  (time.monotonic(), shared by every process on the machine), code (0: no
  answer), text, stage (connect, mail, rcpt, data), sent_data (DATA was
  sent: the message may be stored even without an answer), guid (SHA-1 of
  the bytes replicad stores), uid and epoch (from "2.1.5 OK uid N epoch E").
"""
import argparse
import hashlib
import json
import os
import re
import signal
import smtplib
import subprocess
import threading
import time

MASTER_AT = re.compile(r"master's LMTP is at (\S+)")
UID_RE = re.compile(r"\buid (\d+)")
EPOCH_RE = re.compile(r"\bepoch (\d+)")

stop = threading.Event()


def message_bytes(sender, user, mid):
    """The message as sent (CRLF, ends with CRLF: smtplib sends it unchanged
    but for dot-stuffing) and the bytes replicad stores (Return-Path first)."""
    msg = ("From: <%s>\r\nTo: <%s@faults.test>\r\nSubject: fault run %s\r\n"
           "Message-ID: <%s@faults.test>\r\nX-Mrf-Id: %s\r\n\r\n"
           "message %s for %s\r\n" % (sender, user, mid, mid, mid, mid, user)).encode()
    stored = ("Return-Path: <%s>\r\n" % sender).encode() + msg
    return msg, hashlib.sha1(stored).hexdigest()


class History:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, rec):
        line = json.dumps(rec, sort_keys=True)
        with self.lock:
            self.f.write(line + "\n")


def attempt(addr, sender, rcpt, msg, timeout):
    """One delivery: returns (code, text, stage, sent_data)."""
    host, port = addr.rsplit(":", 1)
    stage, sent_data = "connect", False
    c = None
    try:
        c = smtplib.LMTP(host, int(port), timeout=timeout)
        c.ehlo("mrf-client")
        stage = "mail"
        code, text = c.mail(sender)
        if code == 250:
            stage = "rcpt"
            code, text = c.rcpt(rcpt)
        if code == 250:
            stage = "data"
            sent_data = True
            code, text = c.data(msg)
        return code, text.decode("latin-1") if isinstance(text, bytes) else str(text), stage, sent_data
    except (smtplib.SMTPException, OSError) as e:
        return 0, "%s: %s" % (type(e).__name__, e), stage, sent_data
    finally:
        if c is not None:
            try:
                c.close()
            except Exception:
                pass


class Client(threading.Thread):
    def __init__(self, spec, store, k, hist):
        super().__init__(daemon=True)
        self.spec = spec
        self.store = store
        self.k = k
        self.hist = hist
        st = spec["stores"][store]
        self.users = st["users"]
        self.members = st["members"]
        self.addr = st["master"]
        self.sticky = k == 0 or not spec.get("lookup")

    def rotate(self):
        i = self.members.index(self.addr) if self.addr in self.members else -1
        self.addr = self.members[(i + 1) % len(self.members)]

    def lookup(self, user):
        try:
            r = subprocess.run(self.spec["lookup"] + ["lookup", user, "--json"],
                               capture_output=True, text=True, timeout=5)
            if r.returncode == 0:
                a = json.loads(r.stdout).get("master", {}).get("lmtp_address")
                if a:
                    self.addr = a
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass

    def run(self):
        n = 0
        sender = self.spec["sender"]
        timeout = self.spec["timeout"]
        while not stop.is_set():
            user = self.users[n % len(self.users)]
            mid = "%s-s%s-c%d-%d" % (self.spec["run"], self.store, self.k, n)
            n += 1
            msg, guid = message_bytes(sender, user, mid)
            if not self.sticky:
                self.lookup(user)
            for a in range(1, self.spec["max_attempts"] + 1):
                addr = self.addr
                t0 = time.monotonic()
                code, text, stage, sent_data = attempt(addr, sender, "%s@faults.test" % user, msg, timeout)
                t1 = time.monotonic()
                rec = {"id": mid, "attempt": a, "retry": a > 1, "store": int(self.store),
                       "user": user, "client": self.k, "addr": addr, "send": round(t0, 6),
                       "answer": round(t1, 6), "code": code, "text": text, "stage": stage,
                       "sent_data": sent_data, "guid": guid}
                if code == 250:
                    m = UID_RE.search(text)
                    rec["uid"] = int(m.group(1)) if m else None
                    m = EPOCH_RE.search(text)
                    rec["epoch"] = int(m.group(1)) if m else None
                self.hist.write(rec)
                if code == 250 or code >= 500:
                    break
                m = MASTER_AT.search(text)
                if m and m.group(1) != addr and m.group(1) in self.members:
                    self.addr = m.group(1)
                else:
                    self.rotate()
                if stop.wait(0.1):  # an MTA's retry pause; the schedule, not a wait for a condition
                    break
            stop.wait(self.spec["interval"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--history", required=True)
    ap.add_argument("--stop-file", required=True)
    args = ap.parse_args()
    spec = json.load(open(args.spec))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    hist = History(args.history)
    threads = [Client(spec, store, k, hist) for store in sorted(spec["stores"])
               for k in range(spec["clients_per_store"])]
    for t in threads:
        t.start()
    while not stop.is_set():
        if os.path.exists(args.stop_file):
            stop.set()
        stop.wait(0.1)
    for t in threads:
        t.join(timeout=spec["timeout"] * 4 + 5)


if __name__ == "__main__":
    main()
