"""Helpers for driving the Cyrus pair of bench/cyrus/setup.sh from Python.

Used by bench/cyrus/cyrus_bench.py and bench/cluster_bench.sh. Paths and ports
follow the same variables as the shell scripts (CYRUS_RUN, CYRUS_PORT_BASE).
Everything here runs as root; Cyrus itself runs as user cyrus.
"""
import imaplib
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN = os.environ.get("CYRUS_RUN") or os.path.join(os.environ.get("TMPDIR") or "/tmp", "mailrepl-cyrus")
BASE = int(os.environ.get("CYRUS_PORT_BASE", "26100"))
MASTER_IMAP = ("127.0.0.1", BASE + 1)
MASTER_LMTP = ("127.0.0.1", BASE + 2)
MASTER_LMTP_UNIX = os.path.join(RUN, "master", "config", "socket", "lmtp")
REPLICA_IMAP = ("127.0.0.1", BASE + 11)
REPLICA_SYNC = ("127.0.0.1", BASE + 13)
CYRUS_BIN = "/usr/lib/cyrus/bin"
MASTER_CONF = os.path.join(RUN, "master", "imapd.conf")
AS_CYRUS = ["setpriv", "--reuid=cyrus", "--regid=mail", "--init-groups"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print("[%s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def script(name, *args):
    """Runs bench/cyrus/NAME with ARGS; returns its stdout (raises on failure)."""
    env = dict(os.environ, CYRUS_RUN=RUN, CYRUS_PORT_BASE=str(BASE))
    r = subprocess.run([os.path.join(HERE, name)] + list(args), env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("%s %s: exit %d: %s" % (name, " ".join(args), r.returncode, r.stderr.strip()))
    return r.stdout


def skip_reason():
    """None if the Cyrus pair can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (Cyrus runs as user cyrus)"
    return None


def fresh(users=100):
    """Empty master and replica, both running, users' INBOXes created on the master."""
    script("setup.sh", "--fresh")
    im = Imap(MASTER_IMAP)
    im.create_users(users)
    im.close()


def password():
    with open(os.path.join(RUN, "password")) as f:
        return f.read().strip()


def pid_of(name):
    """Pid recorded by the scripts: 'master', 'replica' (instances) or 'rolling'."""
    f = os.path.join(RUN, "rolling.pid" if name == "rolling" else os.path.join(name, "master.pid"))
    try:
        with open(f) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def alive(pid):
    return pid is not None and os.path.exists("/proc/%d" % pid)


# ------------------------------------------------------------------ CPU from /proc
def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    # after comm: state ppid ... utime(11) stime(12) cutime(13) cstime(14)
    return int(f[1]), [int(x) / CLK_TCK for x in f[11:15]]


def process_cpu(pid):
    """utime + stime of one live process (None if gone)."""
    st = _stat(pid) if pid else None
    return sum(st[1][:2]) if st else None


def instance_cpu(name):
    """CPU seconds of an instance: its master, the children it reaped, its live children."""
    mpid = pid_of(name)
    st = _stat(mpid) if mpid else None
    if not st:
        return 0.0
    total = sum(st[1])
    for d in os.listdir("/proc"):
        if d.isdigit():
            c = _stat(int(d))
            if c and c[0] == mpid:
                total += sum(c[1])
    return total


# ------------------------------------------------------------------ IMAP
class Imap:
    """An admin session on one instance."""

    def __init__(self, addr, wait=30.0):
        deadline = time.time() + wait
        while True:
            try:
                self.m = imaplib.IMAP4(*addr)
                self.m.login("cyrus", password())
                return
            except (OSError, imaplib.IMAP4.error):
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def create_users(self, users):
        for u in range(users):
            box = "user.user%d" % u
            typ, data = self.m.create(box)
            if typ != "OK" and b"exists" not in b" ".join(data).lower():
                raise RuntimeError("CREATE %s: %r" % (box, data))
            # the admin needs read rights on users' mailboxes to STATUS them
            self.m.setacl(box, "cyrus", "lrswipkxtecda")

    def status_all(self, items="MESSAGES"):
        """{mailbox: {item: n}} for every user.* mailbox, in one LIST-STATUS."""
        typ, _ = self.m._simple_command("LIST", '""', '"user.%"', "RETURN", "(STATUS (%s))" % items)
        lines = self.m.untagged_responses.pop("STATUS", [])
        self.m.untagged_responses.pop("LIST", None)
        if typ != "OK":
            raise RuntimeError("LIST-STATUS failed")
        out = {}
        for line in lines:
            line = line.decode() if isinstance(line, bytes) else line
            m = re.match(r'"?([^" ]+)"? \((.*)\)', line)
            kv = m.group(2).split()
            out[m.group(1)] = {kv[i]: int(kv[i + 1]) for i in range(0, len(kv), 2)}
        return out

    def total(self):
        return sum(v["MESSAGES"] for v in self.status_all().values())

    def messages(self, box):
        typ, data = self.m.status(box, "(MESSAGES)")
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))

    def close(self):
        try:
            self.m.logout()
        except Exception:  # noqa: BLE001
            pass


def wait_replica_total(total, timeout=300.0, poll=0.05):
    """Polls the replica until it holds `total` messages; the time it did, or None."""
    im = Imap(REPLICA_IMAP, wait=timeout)
    deadline = time.time() + timeout
    try:
        while True:
            n = im.total()
            t = time.time()
            if n >= total:
                return t
            if t > deadline:
                log("replica still %d messages short after %.0f s" % (total - n, timeout))
                return None
            time.sleep(poll)
    finally:
        im.close()


def compare():
    """Master and replica side by side: per mailbox MESSAGES, UIDNEXT, UIDVALIDITY."""
    a, b = Imap(MASTER_IMAP), Imap(REPLICA_IMAP)
    items = "MESSAGES UIDNEXT UIDVALIDITY"
    ma, mb = a.status_all(items), b.status_all(items)
    a.close()
    b.close()
    differ = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
    return {"master_messages": sum(v["MESSAGES"] for v in ma.values()),
            "replica_messages": sum(v["MESSAGES"] for v in mb.values()),
            "mailboxes": len(ma), "differing_mailboxes": len(differ), "examples": differ[:3]}


# ------------------------------------------------------------------ replication
def sync_all():
    """`sync_client -A`: the whole master to the replica; wall and CPU of the client."""
    import resource
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = instance_cpu("replica")
    t0 = time.monotonic()
    p = subprocess.run(AS_CYRUS + [CYRUS_BIN + "/sync_client", "-C", MASTER_CONF, "-A"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError("sync_client -A exit %d: %s" % (p.returncode, p.stdout[-500:]))
    return {"seconds": seconds,
            "client_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "replica_cpu_s": instance_cpu("replica") - c0}


def clear_sync_log():
    """Drops the master's pending sync log (after a full sync it has nothing new)."""
    d = os.path.join(RUN, "master", "config", "sync")
    for f in os.listdir(d):
        if f.startswith("log"):
            os.unlink(os.path.join(d, f))


# ------------------------------------------------------------------ clients
def routes_dir(users=100):
    """A directory whose cluster.json sends every user to the master's LMTP, so that
    tools/lmtp_deliver.py (the project's LMTP client) delivers to Cyrus unchanged."""
    d = os.path.join(RUN, "lmtp_routes")
    os.makedirs(d, exist_ok=True)
    # the master's unix socket: smtplib.LMTP takes a host starting with "/" as one
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump({"stores": [{"store_id": 1, "master_lmtp": MASTER_LMTP_UNIX + ":0"}],
                   "users": {"user%d" % u: 1 for u in range(users)}}, f)
    return d


def lmtp_deliver(eml_dir, start, count, conns, users=100):
    """tools/lmtp_deliver.py into the master's lmtpd (unix socket); its JSON line plus
    wall_end (time.time())."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "lmtp_deliver.py"), "--cluster", routes_dir(users),
           "--eml-dir", eml_dir, "--start", str(start), "--count", str(count), "--conns", str(conns)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall_end = time.time()
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_end"] = wall_end
    return res


def eml_recipient(path):
    with open(path, "rb") as f:
        for line in f:
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"to:"):
                return line[3:].strip().decode()
    raise ValueError("%s: no To: header" % path)


def dump_workload(eml_dir, start, count):
    """`build/bin/workload dump` of [start, start+count) unless the files are there."""
    last = os.path.join(eml_dir, "%d.eml" % (start + count - 1))
    first = os.path.join(eml_dir, "%d.eml" % start)
    if os.path.exists(first) and os.path.exists(last):
        return
    subprocess.run([os.path.join(ROOT, "build", "bin", "workload"), "dump", "--dir", eml_dir,
                    "--start", str(start), "--count", str(count)], check=True, stdout=subprocess.DEVNULL)


def eml_bytes(eml_dir, start, count):
    return sum(os.path.getsize(os.path.join(eml_dir, "%d.eml" % i)) for i in range(start, start + count))


class Rolling:
    """The rolling sync_client, kept running the way a cyrus.conf DAEMON entry
    would be: started again whenever it exits (Cyrus 3.6's exits when its replica
    goes away mid-session). Counts the restarts."""

    def __init__(self):
        import threading
        self.restarts = 0
        self._stop = threading.Event()
        script("rolling.sh", "start")
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.wait(0.05):
            if not alive(pid_of("rolling")):
                self.restarts += 1
                log("rolling sync_client exited; starting it again (restart %d)" % self.restarts)
                try:
                    script("rolling.sh", "start")
                except RuntimeError as e:
                    log(str(e))

    def pid(self):
        return pid_of("rolling")

    def stop(self):
        self._stop.set()
        self._thread.join()
        script("rolling.sh", "stop")
