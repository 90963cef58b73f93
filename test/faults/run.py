#!/usr/bin/env python3
"""Multi-host fault injection for the mail-replication cluster (Jepsen
style). Each schedule runs on a fresh cluster in network namespaces:
boot, clients deliver, the nemesis applies a seeded schedule of faults,
full heal and settle, then the checker. docs/faults.md explains it all.

usage: run.py --schedules N --seed S [--kinds partition,pause,kill,disk,clock,operator]
              [--only I] [--faults MIN,MAX] [--lease-ms 2000] [--vouch-grace-ms 2000] [--keep] [--bin DIR]
              [--out DIR] [--json FILE]
       run.py --summarize F.jsonl [...]
                                 the figures of earlier runs' --json F (each run
                                 appends every schedule's figures to F.jsonl),
                                 added up: campaigns in parallel, or stopped early
       run.py --cleanup          remove leftovers of earlier runs (mrf* namespaces,
                                 mounts, processes)
       run.py --selfcheck        only the libfaketime experiment
Exit: 0 every schedule passed (or was unsurvivable by design), 1 a
property was violated, 2 the harness could not run.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import checker  # noqa: E402
import netns  # noqa: E402
import nemesis  # noqa: E402
import slots  # noqa: E402
from cluster import Cluster  # noqa: E402
from disks import unmount_all_under  # noqa: E402
from procs import faketime_env, write_offset  # noqa: E402

PREFIX = "mrf"
ROOT_TMP = os.path.join(tempfile.gettempdir(), "mrf-runs")


def say(*a):
    print(*a, flush=True)


# --- cleanup ----------------------------------------------------------------
def cleanup_prefix(prefix=PREFIX, only=None):
    """Kills processes in our namespaces, deletes the namespaces, unmounts
    the disks. only: a run prefix (this run), else every mrf* leftover."""
    names = netns.list_ns(only or prefix)
    for ns in names:
        for pid in netns.pids_in_ns(ns):
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for ns in names:
        netns.delete_ns(ns)
    if only is None:
        unmount_all_under(ROOT_TMP)
    return names


# --- the faketime experiment --------------------------------------------------
PROBE = r"""
import time, json
print(json.dumps({"real": time.clock_gettime(time.CLOCK_REALTIME),
                  "mono": time.clock_gettime(time.CLOCK_MONOTONIC),
                  "boot": time.clock_gettime(time.CLOCK_BOOTTIME)}))
"""


def faketime_selfcheck(dir_):
    """Under LD_PRELOAD libfaketime with our settings: stepping the file moves
    CLOCK_REALTIME of a process, and CLOCK_MONOTONIC/CLOCK_BOOTTIME are not
    faked. (Python's time.sleep fails under libfaketime with
    DONT_FAKE_MONOTONIC, so the probe does not sleep.)"""
    ts = os.path.join(dir_, "selfcheck.ft")
    out = {}
    for off in (0, -30, 30):
        write_offset(ts, off)
        before = (time.time(), time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME))
        r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           env=faketime_env(ts))
        p = json.loads(r.stdout)
        out[off] = (p["real"] - before[0], p["mono"] - before[1], p["boot"] - before[2])
    ok = (abs(out[0][0]) < 1 and abs(out[-30][0] + 30) < 1 and abs(out[30][0] - 30) < 1
          and all(0 <= v[1] < 1 and 0 <= v[2] < 1 for v in out.values()))
    return ok, {str(k): [round(x, 3) for x in v] for k, v in out.items()}


# --- one schedule -----------------------------------------------------------
class Run:
    def __init__(self, args, index, run_dir):
        self.args = args
        self.index = index
        self.dir = run_dir
        self.prefix = "%s%d%s" % (PREFIX, os.getpid(), chr(ord("a") + index % 26))
        net = "10.201.%d" % (os.getpid() % 250 + 1)
        self.topo = netns.Topology(self.prefix, net + ".0/24")
        self.cluster = Cluster(self.topo, run_dir, args.bin, net, lease_ms=args.lease_ms,
                               vouch_grace_ms=args.vouch_grace_ms)
        self.clients = None

    def start_clients(self):
        c = self.cluster
        spec = {"run": "r%d" % self.index, "sender": "mrf@faults.test", "clients_per_store": 2,
                "interval": 0.15, "max_attempts": 4, "timeout": 3.0,
                "lookup": [os.path.join(self.args.bin, "replctl"), "--coordinator", c.coordinator,
                           "--secret-file", c.secret_file],
                "stores": {}}
        masters = c.masters()
        for s in c.stores.values():
            spec["stores"][str(s.id)] = {
                "users": s.users, "members": [c.slots[i].lmtp for i in s.slot_ids],
                "master": c.slots[masters.get(s.id, s.slot_ids[0])].lmtp}
        with open(os.path.join(self.dir, "clients.json"), "w") as f:
            json.dump(spec, f, indent=1)
        self.history = os.path.join(self.dir, "history.jsonl")
        self.stop_file = os.path.join(self.dir, "clients.stop")
        log = open(os.path.join(self.cluster.logs, "clients.log"), "ab")
        self.clients = subprocess.Popen(
            netns.in_ns(c.client_node.ns, [sys.executable, os.path.join(HERE, "clients.py"),
                                           "--spec", os.path.join(self.dir, "clients.json"),
                                           "--history", self.history, "--stop-file", self.stop_file]),
            stdout=log, stderr=log, start_new_session=True)

    def stop_clients(self):
        if self.clients and self.clients.poll() is None:
            open(self.stop_file, "w").close()
            try:
                self.clients.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.clients.kill()
                self.clients.wait()

    def settled(self):
        st = self.cluster.all_ok()
        if not st:
            return None
        if slots.pending_salvage([s.data for s in self.cluster.slots.values()]):
            return None
        return st

    def execute(self, schedule):
        c = self.cluster
        t_boot = time.monotonic()
        c.build_topology()
        c.start()
        c.provision(deadline_s=60)
        boot_s = time.monotonic() - t_boot
        wall_minus_mono = time.time() - time.monotonic()
        nem = nemesis.Nemesis(c, os.path.join(self.dir, "nemesis.jsonl"))
        self.start_clients()
        time.sleep(2.0)  # warm-up traffic before the first fault: part of the schedule
        try:
            nem.run(schedule)
        finally:
            nem.heal_all()
        time.sleep(2.0)  # traffic after the heal: part of the schedule
        settle_err = None
        try:
            c.wait("every store ok and salvage finished", self.settled, self.args.settle_s)
        except TimeoutError as e:
            settle_err = str(e)
        self.stop_clients()
        if not settle_err:
            try:  # the last deliveries may have left a replica a little behind
                c.wait("every store ok after the clients stopped", self.settled, self.args.settle_s)
            except TimeoutError as e:
                settle_err = str(e)
        chk = c.replctl("check", "--all", timeout=120)
        final = c.status() or {}
        events = (c.history() or {}).get("events", [])
        master_of = c.masters(final)
        c.stop_all()
        master_guids, rows = {}, {}
        for st, sl in master_of.items():
            master_guids[st], rows[st] = slots.read_slot(os.path.join(self.args.bin, "mailctl"),
                                                         c.slots[sl].data)
        with open(os.path.join(self.dir, "final.json"), "w") as f:
            json.dump({"status": final, "events": events, "master_rows": rows,
                       "check": {"rc": chk.returncode, "out": chk.stdout + chk.stderr}}, f, indent=1)
        history = [json.loads(l) for l in open(self.history) if l.strip()]
        res = checker.check(
            history, nem.events, events, master_of, master_guids,
            {s.lmtp: s.id for s in c.slots.values()}, wall_minus_mono, chk.returncode,
            chk.stdout + chk.stderr, nem.data_lost,
            {s.id: s.slot_ids for s in c.stores.values()})
        if settle_err:
            res.fail("settle", settle_err + "; last status: " + json.dumps(
                [(s["store"]["store_id"], s["state"]) for s in final.get("stores", [])]))
        res.figures["boot_s"] = round(boot_s, 2)
        return res

    def teardown(self):
        try:
            self.stop_clients()
        except Exception:
            pass
        try:
            self.cluster.teardown()
        finally:
            self.topo.down()
            cleanup_prefix(only=self.prefix)


ACTIVE = []


def new_totals():
    return {"schedules": 0, "passed": 0, "failed": 0, "unsurvivable_by_design": 0,
            "acknowledged": 0, "lost": 0, "duplicated_explained": 0,
            "duplicated_unexplained": 0, "overlapping_writer_intervals": 0,
            "faults_by_kind": {}, "recovery_raw": {}}


def add_schedule(totals, fig):
    """Adds one schedule's figures (checker.Result.figures + outcome)."""
    totals["schedules"] += 1
    totals[fig.get("outcome", "passed")] += 1
    for k in ("acknowledged", "lost", "duplicated_explained", "duplicated_unexplained",
              "overlapping_writer_intervals"):
        totals[k] += fig.get(k, 0)
    for k, v in fig.get("faults_by_kind", {}).items():
        totals["faults_by_kind"][k] = totals["faults_by_kind"].get(k, 0) + v
    for k, v in fig.get("recovery_raw", {}).items():
        totals["recovery_raw"].setdefault(k, []).extend(v)


def finish_totals(totals):
    """Replaces the raw recovery times by their p50 and p99 per kind."""
    out = dict(totals)
    out["recovery_s"] = {k: {"n": len(v), "p50": checker.percentile(v, 50),
                             "p99": checker.percentile(v, 99)}
                         for k, v in sorted(out.pop("recovery_raw").items())}
    return out


def _on_signal(sig, _frame):
    for r in list(ACTIVE):
        try:
            r.teardown()
        except Exception:
            pass
    sys.exit(128 + sig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", type=int, default=3)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--only", type=int, help="run only schedule I of the seed (reproduce)")
    ap.add_argument("--kinds", default=",".join(nemesis.ALL_KINDS))
    ap.add_argument("--faults", default="3,6", help="faults per schedule: MIN,MAX")
    ap.add_argument("--lease-ms", type=int, default=2000)
    ap.add_argument("--vouch-grace-ms", type=int, default=2000,
                    help="coordinatord --vouch-grace-ms (docs/operations.md); -1: do not "
                    "pass it (binaries from before it existed)")
    ap.add_argument("--settle-s", type=float, default=90.0)
    ap.add_argument("--keep", action="store_true", help="keep every run directory")
    ap.add_argument("--bin", default=os.environ.get("MAILREPL_BIN",
                                                     os.path.join(HERE, "..", "..", "build", "bin")))
    ap.add_argument("--out", default=ROOT_TMP)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--summarize", nargs="+", metavar="JSONL")
    ap.add_argument("--cleanup", action="store_true")
    ap.add_argument("--selfcheck", action="store_true")
    args = ap.parse_args()
    if args.summarize:
        totals = new_totals()
        for path in args.summarize:
            with open(path) as f:
                for line in f:
                    add_schedule(totals, json.loads(line))
        say("== figures: " + json.dumps(finish_totals(totals), indent=1))
        return 0
    args.bin = os.path.abspath(args.bin)
    if os.geteuid() != 0:
        say("run.py needs root (network namespaces, mounts)")
        return 2
    if args.cleanup:
        say("removed: %s" % (cleanup_prefix() or "nothing"))
        return 0
    os.makedirs(args.out, exist_ok=True)
    ok, probe = faketime_selfcheck(args.out)
    say("faketime self-check: %s %s (offset: [realtime, monotonic, boottime] deltas)" %
        ("ok" if ok else "FAILED", json.dumps(probe)))
    if not ok:
        return 2
    if args.selfcheck:
        return 0
    for b in ("coordinatord", "replicad", "replctl", "mailctl"):
        p = os.path.join(args.bin, b)
        end = time.monotonic() + 120
        while not os.access(p, os.X_OK):  # another engineer may be rebuilding: poll
            if time.monotonic() > end:
                say("missing %s (run scripts/build.sh release)" % p)
                return 2
            time.sleep(1)
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in nemesis.ALL_KINDS + nemesis.OPT_IN_KINDS:
            say("unknown kind %s" % k)
            return 2
    fmin, fmax = (int(x) for x in args.faults.split(","))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(lambda: [r.teardown() for r in list(ACTIVE)])

    indices = [args.only] if args.only is not None else list(range(args.schedules))
    totals = new_totals()
    failures = []
    for i in indices:
        run_dir = os.path.join(args.out, "seed%s-s%d-%d" % (args.seed, i, os.getpid()))
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        # A throwaway cluster object gives the generator the shape.
        r = Run(args, i, run_dir)
        schedule = nemesis.make_schedule(nemesis.schedule_rng(args.seed, i), r.cluster, kinds,
                                         (fmin, fmax), args.lease_ms)
        with open(os.path.join(run_dir, "schedule.json"), "w") as f:
            json.dump(schedule, f, indent=1)
        say("== schedule %d (seed %s): %s" % (i, args.seed, json.dumps(schedule)))
        ACTIVE.append(r)
        t0 = time.monotonic()
        res = None
        try:
            res = r.execute(schedule)
        except Exception:
            err = traceback.format_exc()
            say(err)
            res = checker.Result()
            res.fail("harness", err.strip().splitlines()[-1])
        finally:
            r.teardown()
            ACTIVE.remove(r)
        fig = res.figures
        outcome = ("failed" if res.violations else
                   "unsurvivable_by_design" if res.unsurvivable else "passed")
        add_schedule(totals, dict(fig, outcome=outcome))
        if args.json:
            with open(args.json + ".jsonl", "a") as f:
                f.write(json.dumps(dict(fig, outcome=outcome, seed=args.seed, index=i)) + "\n")
        summary = {k: v for k, v in fig.items() if k != "recovery_raw"}
        say("   %.1fs: %s" % (time.monotonic() - t0, json.dumps(summary)))
        if res.unsurvivable and not res.violations:
            say("   UNSURVIVABLE BY DESIGN: stores %s lost all their copies" % res.unsurvivable)
        if res.violations:
            failures.append((i, run_dir))
            say("   FAILED: seed %s schedule %d (reproduce: run.py --seed %s --only %d --kinds %s)"
                % (args.seed, i, args.seed, i, args.kinds))
            say("   schedule: %s" % json.dumps(schedule))
            shown = {}
            for v in res.violations:
                shown[v["property"]] = shown.get(v["property"], 0) + 1
                if shown[v["property"]] > 5:
                    continue
                say("   VIOLATION [%s] %s" % (v["property"], v["message"]))
                for line in v["lines"][:8]:
                    say("      " + json.dumps({k: x for k, x in line.items() if not k.startswith("_")},
                                              sort_keys=True))
            say("   violations by property: %s" % json.dumps(shown))
            with open(os.path.join(run_dir, "violations.json"), "w") as f:
                json.dump(res.violations, f, indent=1, default=str)
            say("   kept: %s (logs/, history.jsonl, nemesis.jsonl, final.json)" % run_dir)
        else:
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    totals = finish_totals(totals)
    say("== figures: " + json.dumps(totals, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(totals, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
