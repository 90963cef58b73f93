"""A test cluster across network namespaces: the secret, coordinatord in its
namespace, one replicad per host (each host's slots on a loop-mounted ext4
of its own), the stores and users, and replctl run from the client
namespace. Every daemon runs under libfaketime (procs.Daemon)."""
import json
import os
import secrets
import subprocess
import time

from disks import Disk
from netns import in_ns
from procs import Daemon

LMTP_PORT, API_PORT, SYNC_PORT = 2424, 2425, 2426
COORD_PORT, METRICS_PORT = 7400, 9100

# Slot ids per host: host h (1-based) holds slots (h-1)*K+1 .. h*K.
# Stores: (slot ids, master first). Two of them have 2 replicas.
DEFAULT_HOSTS = 4
DEFAULT_SLOTS_PER_HOST = 2
DEFAULT_STORES = [[1, 3, 5], [4, 6, 7], [8, 2]]
USERS_PER_STORE = 3


class Slot:
    def __init__(self, slot_id, host, addr, data):
        self.id = slot_id
        self.host = host
        self.addr = addr
        self.data = data
        self.lmtp = "%s:%d" % (addr, LMTP_PORT)
        self.api = "%s:%d" % (addr, API_PORT)
        self.sync = "%s:%d" % (addr, SYNC_PORT)


class Host:
    def __init__(self, name, addr, dir_, disk):
        self.name = name
        self.addr = addr
        self.dir = dir_
        self.disk = disk
        self.slots = []
        self.daemon = None
        self.node = None


class Store:
    def __init__(self, store_id, slot_ids, users):
        self.id = store_id
        self.slot_ids = list(slot_ids)
        self.users = list(users)


class Cluster:
    def __init__(self, topo, run_dir, bin_dir, net_base, lease_ms=2000, vouch_grace_ms=2000,
                 hosts=DEFAULT_HOSTS, slots_per_host=DEFAULT_SLOTS_PER_HOST,
                 stores=DEFAULT_STORES, disk_mb=160):
        self.topo = topo
        self.dir = run_dir
        self.bin = bin_dir
        self.lease_ms = lease_ms
        self.vouch_grace_ms = vouch_grace_ms
        self.net_base = net_base  # "10.201.R"
        self.secret_file = os.path.join(run_dir, "secret")
        self.coord_addr = "%s.1" % net_base
        self.client_addr = "%s.2" % net_base
        self.coordinator = "%s:%d" % (self.coord_addr, COORD_PORT)
        self.logs = os.path.join(run_dir, "logs")
        self.ft_dir = os.path.join(run_dir, "faketime")
        os.makedirs(self.logs, exist_ok=True)
        os.makedirs(self.ft_dir, exist_ok=True)
        self.hosts = {}
        self.slots = {}
        for h in range(1, hosts + 1):
            name = "h%d" % h
            hdir = os.path.join(run_dir, name)
            disk = Disk(os.path.join(run_dir, name + ".img"), os.path.join(hdir, "disk"), disk_mb)
            host = Host(name, "%s.%d" % (net_base, 10 * h), hdir, disk)
            for k in range(1, slots_per_host + 1):
                sid = (h - 1) * slots_per_host + k
                s = Slot(sid, name, "%s.%d" % (net_base, 10 * h + k),
                         os.path.join(disk.mountpoint, "slot%d" % sid))
                host.slots.append(s)
                self.slots[sid] = s
            self.hosts[name] = host
        self.stores = {}
        u = 0
        for i, ids in enumerate(stores):
            users = []
            for _ in range(USERS_PER_STORE):
                users.append("u%d" % u)
                u += 1
            self.stores[i + 1] = Store(i + 1, ids, users)
        self.coord = None
        self.coord_node = None
        self.client_node = None

    # --- topology -----------------------------------------------------------
    def build_topology(self):
        self.topo.up()
        self.coord_node = self.topo.add_node("coord", [self.coord_addr])
        self.client_node = self.topo.add_node("cli", [self.client_addr])
        for h in self.hosts.values():
            h.node = self.topo.add_node(h.name, [h.addr] + [s.addr for s in h.slots])
        for h in self.hosts.values():
            self.topo.wait_reachable("cli", h.addr)
        self.topo.wait_reachable("cli", self.coord_addr)

    def node_of_slot(self, sid):
        return self.hosts[self.slots[sid].host].node

    # --- processes ----------------------------------------------------------
    def start(self):
        with open(self.secret_file, "w") as f:
            f.write(secrets.token_hex(24) + "\n")
        os.chmod(self.secret_file, 0o600)
        self.coord = Daemon(
            "coordinatord", self.coord_node.ns,
            [os.path.join(self.bin, "coordinatord"), "--db", os.path.join(self.dir, "coordinator.db"),
             "--listen", self.coordinator, "--secret-file", self.secret_file,
             "--lease-ms", str(self.lease_ms), "--cluster-id", "faults"] +
            # Negative: leave it out (binaries older than the flag).
            (["--vouch-grace-ms", str(self.vouch_grace_ms)] if self.vouch_grace_ms >= 0 else []),
            os.path.join(self.logs, "coordinatord.log"), os.path.join(self.ft_dir, "coordinatord"))
        self.coord.start()
        for h in self.hosts.values():
            h.disk.mount()
            os.makedirs(os.path.join(h.dir, "state"), exist_ok=True)
            conf = os.path.join(h.dir, "replicad.conf")
            with open(conf, "w") as f:
                f.write(self.replicad_conf(h))
            h.daemon = Daemon(h.name, h.node.ns,
                              [os.path.join(self.bin, "replicad"), "--config", conf],
                              os.path.join(self.logs, h.name + ".log"),
                              os.path.join(self.ft_dir, h.name))
            h.daemon.start()

    def replicad_conf(self, h):
        lines = ["# written by test/faults/cluster.py",
                 'host: "%s"' % h.name,
                 'coordinator: "%s"' % self.coordinator,
                 'secret_file: "%s"' % self.secret_file,
                 'metrics_listen: "%s:%d"' % (h.addr, METRICS_PORT),
                 'state_dir: "%s"' % os.path.join(h.dir, "state")]
        for s in h.slots:
            lines += ["slot {", "  slot_id: %d" % s.id, '  data: "%s"' % s.data,
                      '  lmtp_listen: "%s"' % s.lmtp, '  api_listen: "%s"' % s.api,
                      '  sync_listen: "%s"' % s.sync, "}"]
        return "\n".join(lines) + "\n"

    def daemons(self):
        out = [self.coord] if self.coord else []
        out += [h.daemon for h in self.hosts.values() if h.daemon]
        return out

    def stop_all(self):
        for h in self.hosts.values():
            if h.daemon:
                h.daemon.stop()
        if self.coord:
            self.coord.stop()

    def teardown(self):
        for d in self.daemons():
            try:
                d.kill()
            except Exception:
                pass
        for h in self.hosts.values():
            h.disk.unmount()

    # --- replctl ------------------------------------------------------------
    def replctl(self, *args, timeout=60):
        argv = in_ns(self.client_node.ns, [os.path.join(self.bin, "replctl"), "--coordinator",
                                          self.coordinator, "--secret-file", self.secret_file]
                     + list(args))
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, 124, e.stdout or "", "timeout")

    def status(self):
        r = self.replctl("status", "--json", timeout=20)
        if r.returncode not in (0, 1) or not r.stdout.strip():
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def history(self):
        r = self.replctl("history", "--json", timeout=20)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def wait(self, what, cond, deadline_s, interval=0.2):
        """Polls cond() (truthy = done) until deadline_s; raises TimeoutError."""
        end = time.monotonic() + deadline_s
        last = None
        while True:
            last = cond()
            if last:
                return last
            if time.monotonic() > end:
                raise TimeoutError("timed out after %.0fs waiting for %s" % (deadline_s, what))
            time.sleep(interval)  # polling interval, not a wait for a condition

    def all_ok(self):
        """Status if every store is ok and every host is alive and holds the
        current topology and directory versions, else None."""
        st = self.status()
        if not st:
            return None
        stores = st.get("stores", [])
        if len(stores) != len(self.stores) or any(s.get("state") != "ok" for s in stores):
            return None
        ver, dver = str(st.get("version", "")), str(st.get("directory_version", ""))
        for h in st.get("hosts", []):
            if not h.get("alive"):
                return None
            if str(h.get("known_version", "")) != ver or str(h.get("known_directory_version", "")) != dver:
                return None
        return st

    def provision(self, deadline_s=60):
        n_slots = len(self.slots)
        def registered():
            st = self.status()
            if not st:
                return None
            got = sum(len(h.get("slot_ids", [])) for h in st.get("hosts", []) if h.get("alive"))
            return got == n_slots
        self.wait("every host to register", registered, deadline_s)
        for s in self.stores.values():
            r = self.replctl("create-store", "--store", str(s.id),
                             "--slots", ",".join(str(i) for i in s.slot_ids))
            if r.returncode != 0:
                raise RuntimeError("create-store %d: %s %s" % (s.id, r.stdout, r.stderr))
            r = self.replctl("assign-users", "--store", str(s.id), *s.users)
            if r.returncode != 0:
                raise RuntimeError("assign-users %d: %s %s" % (s.id, r.stdout, r.stderr))
        return self.wait("every store ok", self.all_ok, deadline_s)

    def masters(self, st=None):
        """store id -> master slot id, from status."""
        st = st or self.status() or {}
        return {int(s["store"]["store_id"]): int(s["store"]["master_slot_id"])
                for s in st.get("stores", [])}

    def describe(self):
        return {
            "coordinator": self.coordinator, "lease_ms": self.lease_ms,
            "hosts": {h.name: {"addr": h.addr, "slots": [s.id for s in h.slots]}
                      for h in self.hosts.values()},
            "slots": {str(s.id): {"host": s.host, "lmtp": s.lmtp, "data": s.data}
                      for s in self.slots.values()},
            "stores": {str(s.id): {"slots": s.slot_ids, "users": s.users}
                       for s in self.stores.values()},
        }
