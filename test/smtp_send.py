#!/usr/bin/env python3
"""SMTP sender for test/postfix_e2e_test.cc: submits workload messages to an
MTA with Python's smtplib.SMTP (a real client), one connection, one message
at a time, the envelope recipient taken from the To: header.

usage: smtp_send.py --server ADDR:PORT --eml-dir D [--start S] --count N
                    [--rate MSGS_PER_S] [--record FILE] [--reconnect]

Sends messages S .. S+N-1 (files D/<index>.eml).
--rate R: at most R messages per second (spreads the load over the time a
drain takes; 0 = as fast as the MTA accepts).
--record F: one line per message, "INDEX RCPT CODE", written as it goes.
--reconnect: a new SMTP connection for every message (as many senders do).
Exit 0 if every message was accepted (250), else 1.
"""
import argparse, os, smtplib, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from lmtp_deliver import recipient  # the To: header of a workload message

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--eml-dir", required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--record")
    ap.add_argument("--reconnect", action="store_true")
    args = ap.parse_args()
    host, port = args.server.rsplit(":", 1)
    record = open(args.record, "w", buffering=1) if args.record else None
    conn = smtplib.SMTP(host, int(port), timeout=60)
    start = time.monotonic()
    failed = 0
    for k in range(args.count):
        i = args.start + k
        if args.rate > 0:
            due = start + k / args.rate  # pacing the load, not waiting for a condition
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
        with open(os.path.join(args.eml_dir, "%d.eml" % i), "rb") as f:
            msg = f.read()
        rcpt = recipient(msg)
        if args.reconnect and k > 0:
            try:
                conn.quit()
            except (smtplib.SMTPServerDisconnected, OSError):
                pass
            conn = smtplib.SMTP(host, int(port), timeout=60)
        try:
            refused = conn.sendmail("sender@bench.invalid", [rcpt], msg)
            code = refused[rcpt][0] if rcpt in refused else 250
        except smtplib.SMTPRecipientsRefused as e:
            code = e.recipients[rcpt][0]
        except smtplib.SMTPResponseException as e:
            code = e.smtp_code
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            print("message %d: %s; reconnecting" % (i, e), file=sys.stderr)
            code = 0
        if code != 250:
            failed += 1
            try:
                conn.rset()
            except (smtplib.SMTPServerDisconnected, OSError):
                conn.close()
                conn = smtplib.SMTP(host, int(port), timeout=60)
        if record:
            record.write("%d %s %d\n" % (i, rcpt, code))
    try:
        conn.quit()
    except (smtplib.SMTPServerDisconnected, OSError):
        pass
    print("sent=%d failed=%d seconds=%.2f" % (args.count, failed, time.monotonic() - start))
    return 0 if failed == 0 else 1

if __name__ == "__main__":
    sys.exit(main())
