"""A daemon of the cluster: started inside its node's network namespace
under libfaketime (its own FAKETIME_TIMESTAMP_FILE, "+0" normally, so the
nemesis can step its wall clock; CLOCK_MONOTONIC and CLOCK_BOOTTIME are
not faked), stdout and stderr appended to its log; SIGSTOP/SIGCONT,
SIGKILL and restart."""
import os
import signal
import subprocess
import time

from netns import in_ns

FAKETIME_LIBS = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
]


def faketime_lib():
    for p in FAKETIME_LIBS:
        if os.path.exists(p):
            return p
    raise RuntimeError("libfaketime.so.1 not found (apt-get install faketime)")


def faketime_env(ts_file):
    env = dict(os.environ)
    env.update({
        "LD_PRELOAD": faketime_lib(),
        "FAKETIME_TIMESTAMP_FILE": ts_file,
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    })
    # Sanitizer builds: ASan wants its runtime first in the library list,
    # and libfaketime is preloaded before it; they do not intercept the
    # same calls, so let ASan start anyway.
    asan = env.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env


def write_offset(ts_file, seconds):
    """Steps the process's wall clock: "+0" is real time, "-30" 30 s behind."""
    tmp = ts_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%+d\n" % seconds)
    os.rename(tmp, ts_file)


class Daemon:
    def __init__(self, name, ns, argv, log, ts_file):
        self.name = name
        self.ns = ns
        self.argv = list(argv)
        self.log = log
        self.ts_file = ts_file
        self.proc = None
        self.paused = False
        self.clock_offset = 0
        write_offset(ts_file, 0)

    def start(self):
        with open(self.log, "ab") as out:
            out.write(("=== mrf: start %s at mono %.3f\n" % (self.name, time.monotonic())).encode())
            out.flush()
            self.proc = subprocess.Popen(in_ns(self.ns, self.argv), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, env=faketime_env(self.ts_file),
                                         start_new_session=True)
        self.paused = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self):
        if self.alive():
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.paused = False

    def step_clock(self, seconds):
        self.clock_offset = seconds
        write_offset(self.ts_file, seconds)

    def stop(self, grace_s=10.0):
        """SIGTERM, then SIGKILL after grace_s; returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        if self.paused:
            self.resume()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
