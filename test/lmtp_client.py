#!/usr/bin/env python3
"""LMTP client for test/lmtp_e2e_test.cc: drives lmtpd with Python's smtplib.LMTP
and with a raw pipelining socket, and prints one parseable line per outcome.

Modes (PORT is lmtpd's TCP port on 127.0.0.1):
  deliver PORT MANIFEST CONNS STYLE
      MANIFEST lines are "rcpt[,rcpt...] FILE"; CONNS connections share them
      (connection k takes lines k, k+CONNS, ...). STYLE "lowlevel": MAIL, the
      RCPTs, DATA and one reply per accepted recipient (RFC 2033); "sendmail":
      smtplib's sendmail() (one recipient per message: smtplib reads only one
      reply after DATA). Prints "RESULT FILE rcpt=C,C data=C,C" per message,
      C being "250/2.1.5" (code/enhanced code, "-" when none), or
      "RESULT FILE error=..." after which that connection stops.
  size PORT N         MAIL FROM with SIZE=N; prints "MAIL C".
  pipeline PORT F1 F2 one socket, commands pipelined (RFC 2920); prints "REPLY <code> <word>"
                      per reply (the last line of a multi-line reply).
  hold PORT           connects and says LHLO, prints "READY", then prints
                      "FINAL <last line>" once the server closes the connection
                      (or "FINAL <greeting>" if the greeting was not 220).
"""
import smtplib, socket, sys, threading
SENDER = "sender@example.test"
out_lock = threading.Lock()

def say(line):
    with out_lock:
        print(line, flush=True)

def code_of(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("latin-1")
    parts = msg.split()
    enh = parts[0] if parts and parts[0][:1].isdigit() else "-"
    return "%d/%s" % (code, enh)

def lowlevel(c, rcpts, data):
    code, msg = c.mail(SENDER)
    if code != 250:
        c.rset()
        return "mail=" + code_of(code, msg)
    rc = [c.rcpt(r) for r in rcpts]
    accepted = sum(1 for code, _ in rc if code == 250)
    dc = []
    if accepted:
        dc.append(code_of(*c.data(data)))
        for _ in range(accepted - 1):
            dc.append(code_of(*c.getreply()))
    else:
        c.rset()
    return "rcpt=%s data=%s" % (",".join(code_of(*x) for x in rc), ",".join(dc) or "-")

def viasendmail(c, rcpts, data):
    try:
        refused = c.sendmail(SENDER, rcpts, data)
    except smtplib.SMTPRecipientsRefused as e:
        return "rcpt=%s data=-" % ",".join(code_of(*e.recipients[r]) for r in rcpts)
    except smtplib.SMTPResponseException as e:
        return "data=" + code_of(e.smtp_code, e.smtp_error)
    return "rcpt=%s data=250/-" % ",".join(
        code_of(*refused[r]) if r in refused else "250/-" for r in rcpts)

def deliver(port, manifest, conns, style):
    jobs = [l.split() for l in open(manifest).read().splitlines() if l.strip()]
    def worker(k):
        c = smtplib.LMTP("127.0.0.1", port, timeout=120)
        c.ehlo("e2e-client")
        for rcpts, path in jobs[k::conns]:
            data = open(path, "rb").read()
            try:
                r = (lowlevel if style == "lowlevel" else viasendmail)(c, rcpts.split(","), data)
            except Exception as e:
                say("RESULT %s error=%r" % (path, e))
                return
            say("RESULT %s %s" % (path, r))
        c.quit()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads: t.start()
    for t in threads: t.join()

def replies(f, n):
    for _ in range(n):
        while True:
            line = f.readline().decode("latin-1").rstrip("\r\n")
            if line[3:4] != "-":
                break
        say("REPLY " + " ".join(line.split()[:2]))

def stuff(data):
    lines = data.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"

def pipeline(port, f1, f2):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")
    replies(f, 1)
    s.sendall(b"LHLO pipe\r\nMAIL FROM:<sender@example.test> BODY=8BITMIME\r\n"
              b"RCPT TO:<user0@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
              b"RCPT TO:<user1@example.test>\r\nDATA\r\n")
    replies(f, 6)
    s.sendall(stuff(open(f1, "rb").read()) + b"MAIL FROM:<sender@example.test>\r\n"
              b"RCPT TO:<user2@example.test>\r\nDATA\r\n")
    replies(f, 5)
    s.sendall(stuff(open(f2, "rb").read()) + b"NOOP\r\nQUIT\r\n")
    replies(f, 3)

def hold(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")
    greeting = f.readline().decode("latin-1").rstrip("\r\n")
    if not greeting.startswith("220"):
        say("FINAL " + greeting)
        return
    s.sendall(b"LHLO hold\r\n")
    replies(f, 1)
    say("READY")
    last = ""
    for line in f:
        last = line.decode("latin-1").rstrip("\r\n")
    say("FINAL " + last)

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "deliver":
    deliver(port, sys.argv[3], int(sys.argv[4]), sys.argv[5])
elif mode == "size":
    c = smtplib.LMTP("127.0.0.1", port)
    c.ehlo("e2e-client")
    say("MAIL " + code_of(*c.mail(SENDER, ["SIZE=" + sys.argv[3]])))
    c.quit()
elif mode == "pipeline":
    pipeline(port, sys.argv[3], sys.argv[4])
elif mode == "hold":
    hold(port)
