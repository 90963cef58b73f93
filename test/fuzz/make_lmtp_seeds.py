#!/usr/bin/env python3
"""Writes the seeds of lmtp_fuzzer (test/fuzz/corpus/lmtp_fuzzer/), run once:
    python3 test/fuzz/make_lmtp_seeds.py
Each seed is 5 control bytes (see lmtp_fuzzer.cc: the parser's limits, then
the sizes of the pieces the session is fed in) and a client's session:
realistic ones, and the edge cases of test/lmtp_parser_test.cc."""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "lmtp_fuzzer")


def control(msg=3, line=3, rcpt=3, bad=2, pieces=(0, 0, 0, 0)):
    # msg: 0, 40, 1000, 50 MiB; line: 12, 64, 512, 1000; rcpt: 1, 2, 5,
    # 1000; bad: 1, 3, 20, 1000 (indexes into the fuzzer's tables).
    return bytes([msg | line << 2 | rcpt << 4 | bad << 6]) + bytes(pieces)


def stuff(message):
    out = b""
    for line in message.split(b"\r\n")[:-1]:
        out += (b"." if line.startswith(b".") else b"") + line + b"\r\n"
    return out + b".\r\n"


HELLO = b"LHLO client.test\r\n"
MESSAGE = (b"Return-Path: <a@b.test>\r\nFrom: a@b.test\r\nTo: u1@x\r\nSubject: hi\r\n\r\n"
           b"hello\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n")

SEEDS = {
    # Postfix's way: one command per round trip, a message with dot-stuffing.
    "session": control() + HELLO + b"MAIL FROM:<a@b.test> SIZE=120 BODY=8BITMIME\r\n"
    b"RCPT TO:<u1@x>\r\nRCPT TO:<unknown@x>\r\nRCPT TO:<u2@x>\r\nDATA\r\n" + stuff(MESSAGE) +
    b"RSET\r\nQUIT\r\n",
    # Everything pipelined, two transactions, read in odd pieces.
    "pipelined": control(pieces=(1, 7, 13, 200)) + HELLO +
    b"MAIL FROM:<a@b> SIZE=20\r\nRCPT TO:<u1@x>\r\nRCPT TO:<u2@x>\r\nDATA\r\n"
    b"Subject: x\r\n\r\nhello\r\n.\r\n"
    b"MAIL FROM:<> BODY=7BIT\r\nRCPT TO:<@relay.test:u@x>\r\nRCPT TO:<\"a>b\"@x>\r\nDATA\r\n"
    b"body\r\n.\r\nNOOP\r\nVRFY u1\r\nQUIT\r\n",
    # Bare LFs end lines; message lines are stored with CRLF.
    "bare_lf": control(pieces=(3, 3, 3, 3)) +
    b"LHLO c\nMAIL FROM:<a@b>\nRCPT TO:<u@x>\nDATA\nline one\n..dot\r\nbare\rcr\n.\nQUIT\n",
    # A message line longer than the parser's 8 KiB partial-line buffer.
    "long_line": control(pieces=(0, 255, 0, 17)) + HELLO +
    b"MAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\nH: v\r\n\r\n." + b"x" * 9000 +
    b"\r\r\nend\r\n.\r\n",
    # Over the size limit (1000): 552 5.3.4 per recipient, then a small one.
    "oversized": control(msg=2, pieces=(0, 100, 0, 100)) + HELLO +
    b"MAIL FROM:<a@b>\r\nRCPT TO:<u1@x>\r\nRCPT TO:<u2@x>\r\nRCPT TO:<u3@x>\r\nDATA\r\n" +
    (b"z" * 98 + b"\r\n") * 12 + b".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u1@x>\r\nDATA\r\nsmall\r\n.\r\n",
    # Exactly the limit (40 bytes) is accepted.
    "exact_limit": control(msg=1) + HELLO +
    b"MAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\n" + b"0" * 38 + b"\r\n.\r\n",
    # An overlong command line (limit 64), in one read and in many.
    "overlong_line": control(line=1, pieces=(10, 10, 10, 10)) + HELLO[:0] + b"LHLO c\r\n" +
    b"MAIL FROM:<" + b"a" * 200 + b"@b>\r\nNOOP\r\nNOOP " + b"n" * 57 + b"\r\n",
    # MAIL parameters: SIZE over the limit, not a number, BODY, unknown ones.
    "mail_params": control(msg=2) + HELLO +
    b"MAIL FROM:<a@b> SIZE=1001\r\nMAIL FROM:<a@b> SIZE=ten\r\n"
    b"MAIL FROM:<a@b> BODY=BINARYMIME\r\nMAIL FROM:<a@b> NOTIFY=NEVER\r\n"
    b"mail from: <a@b> size=1000 body=8bitmime\r\nRCPT TO:<u@x> NOTIFY=NEVER\r\n",
    # Out of sequence: 503 5.5.1.
    "sequence": control() + b"MAIL FROM:<a@b>\r\n" + HELLO +
    b"RCPT TO:<u@x>\r\nDATA\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nDATA\r\n"
    b"RCPT TO:<unknown1@x>\r\nDATA\r\nRSET\r\nRCPT TO:<u@x>\r\nRSET x\r\nDATA x\r\n",
    # Malformed addresses: 501.
    "addresses": control() + HELLO +
    b"MAIL FROM:a@b\r\nMAIL FROM:<a@b\r\nMAIL FROM:<a@b>\r\nRCPT TO:<>\r\n"
    b"RCPT TO:u@x\r\nRCPT TO:<@relay.test:u@x>\r\nRCPT TO:<\"a\\\">b\"@x>\r\n"
    b"RCPT TO:<u\x01@x>\r\nRCPT TO:<@nocolon>\r\n",
    # NUL and control bytes in LHLO; garbage up to 421 (limit 3).
    "garbage": control(bad=1) + b"LHLO cli\0ent.test\r\nLHLO \0\r\nLHLO\r\n"
    b"\x01\x02\xff\xfe garbage\r\n\0\0\0\r\nEHLO x\r\nEXPN list\r\n\r\nNOOP\r\n",
    # Too many recipients (limit 2): 452 4.5.3.
    "recipients": control(rcpt=1) + HELLO +
    b"MAIL FROM:<a@b>\r\nRCPT TO:<u1@x>\r\nRCPT TO:<u2@x>\r\nRCPT TO:<u3@x>\r\nDATA\r\nx\r\n.\r\n",
    # Commands LMTP does not implement, and the end of data split everywhere.
    "misc": control(pieces=(1, 1, 1, 1)) + HELLO +
    b"HELP\r\nSTARTTLS\r\nBDAT 10\r\nHELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<u@x>\r\nDATA\r\n"
    b"A: b\r\n\r\n.dot\r\nbody\r\n.\r\nQUIT\r\nNOOP\r\n",
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {OUT}")
