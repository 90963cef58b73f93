#!/usr/bin/env python3
"""Receives syslog(3) datagrams on a unix socket and appends them to a file.

usage: syslog_sink.py SOCKET FILE

bench/cyrus/setup.sh runs it on /dev/log only when the machine has no syslog
daemon, so that Cyrus's diagnostics (it logs nothing else) are kept; each line
is prefixed with the receive time (Unix seconds). Stopped by pid
(bench/cyrus/teardown.sh), which also removes the socket.
"""
import os
import socket
import sys
import time


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, out = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)  # Cyrus's processes run as user cyrus
    with open(out, "ab", buffering=0) as f:
        while True:
            data = sock.recv(1 << 16).rstrip(b"\0\n")
            f.write(b"%.3f %s\n" % (time.time(), data))


if __name__ == "__main__":
    main()
