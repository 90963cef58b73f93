"""The nemesis: a seeded random schedule of faults, each applied, held, then
healed, every step logged with time.monotonic().

A schedule is plain data (a list of fault dicts) drawn from
random.Random(seed) before the run, so it can be printed and replayed;
targets that depend on the run's state ("the master of store 2") are
resolved when the fault starts.

Kinds (sub-kinds):
  partition  isolate_host, isolate_coord, split, store_split_promote,
             one_way_in, one_way_netem
  pause      SIGSTOP a replicad or coordinatord for 1.5-2.5 lease periods
  kill       SIGKILL a replicad, restart it later (rejoin); may promote
             the stores it mastered
  disk       fill a host's file system (fallocate), then free it
  clock      step a daemon's wall clock +-30 s (faketime file), then back;
             isolated_master_back: step a master's host back 30 s, isolate
             it and promote its store
  operator   drain/undrain a host, failover a store
  wipe       (opt-in) SIGKILL a replicad and delete its slots' data: a store
             whose master (async) or all slots lose their data is
             unsurvivable by design
"""
import json
import random
import threading
import time

import netfaults

ALL_KINDS = ["partition", "pause", "kill", "disk", "clock", "operator"]
OPT_IN_KINDS = ["wipe"]


def schedule_rng(seed, index):
    return random.Random("%s:%d" % (seed, index))


def make_schedule(rng, cluster, kinds, faults=(3, 6), lease_ms=2000):
    """A list of faults over about 20-40 s."""
    L = lease_ms / 1000.0
    hosts = sorted(cluster.hosts)
    stores = sorted(cluster.stores)
    two_rep = [s for s in stores if len(cluster.stores[s].slot_ids) >= 3]
    out = []
    for _ in range(rng.randint(*faults)):
        kind = rng.choice(kinds)
        f = {"kind": kind, "hold": round(rng.uniform(3, 6), 2), "gap": round(rng.uniform(0.5, 2), 2)}
        if kind == "partition":
            subs = ["isolate_host", "isolate_coord", "split", "one_way_in", "one_way_netem"]
            if two_rep:
                subs += ["store_split_promote"] * 2
            sub = rng.choice(subs)
            f["sub"] = sub
            if sub in ("isolate_host", "one_way_in", "one_way_netem"):
                f["host"] = rng.choice(hosts)
                f["promote"] = sub == "isolate_host" and rng.random() < 0.5
            elif sub == "split":
                nodes = hosts + ["coord"]
                rng.shuffle(nodes)
                cut = rng.randint(1, len(nodes) - 1)
                f["groups"] = [sorted(nodes[:cut]), sorted(nodes[cut:])]
            elif sub == "store_split_promote":
                f["store"] = rng.choice(two_rep)
                f["b_index"] = rng.randint(0, 1)  # which replica stays with the master
                f["promote"] = True
        elif kind == "pause":
            f["target"] = rng.choice(hosts + ["coord"])
            f["hold"] = round(rng.uniform(1.5, 2.5) * L, 2)
        elif kind == "kill":
            f["host"] = rng.choice(hosts)
            f["promote"] = rng.random() < 0.5
        elif kind == "disk":
            f["host"] = rng.choice(hosts)
        elif kind == "clock":
            if rng.random() < 0.35:
                f["sub"] = "isolated_master_back"
                f["store"] = rng.choice(stores)
                f["delta"] = -30
                f["promote"] = True
            else:
                f["sub"] = "step"
                f["target"] = rng.choice(hosts + ["coord"])
                f["delta"] = rng.choice([-30, 30])
        elif kind == "operator":
            f["sub"] = rng.choice(["drain", "failover"])
            if f["sub"] == "drain":
                f["host"] = rng.choice(hosts)
            else:
                f["store"] = rng.choice(stores)
        elif kind == "wipe":
            f["host"] = rng.choice(hosts)
        out.append(f)
    return out


class Nemesis:
    def __init__(self, cluster, log_path):
        self.c = cluster
        self.log_f = open(log_path, "a", buffering=1)
        self.events = []
        self.data_lost = []  # (slot id, store id, was master)
        self.drained = set()

    def log(self, **ev):
        ev["t"] = round(time.monotonic(), 6)
        self.events.append(ev)
        self.log_f.write(json.dumps(ev, sort_keys=True) + "\n")
        return ev

    # --- helpers ------------------------------------------------------------
    def node(self, name):
        return self.c.coord_node if name == "coord" else self.c.hosts[name].node

    def daemon(self, name):
        return self.c.coord if name == "coord" else self.c.hosts[name].daemon

    def masters(self):
        return self.c.masters()

    def stores_on(self, host_names):
        out = set()
        for s in self.c.stores.values():
            if any(self.c.slots[i].host in host_names for i in s.slot_ids):
                out.add(s.id)
        return sorted(out)

    def stores_mastered_on(self, host, masters):
        return sorted(st for st, sl in masters.items() if self.c.slots[sl].host == host)

    def cluster_nodes_except(self, names):
        return [self.node(n) for n in list(self.c.hosts) + ["coord"] if n not in names]

    def promote(self, store):
        """replctl promote STORE --force, once the coordinator no longer counts
        the master's host alive (promote refuses a live host). Polls."""
        t0 = time.monotonic()
        st = self.c.status() or {}
        master = self.c.masters(st).get(store)
        host = self.c.slots[master].host if master else None
        end = t0 + 4 * self.c.lease_ms / 1000.0 + 5
        while host and time.monotonic() < end:
            alive = {h["host"]: h.get("alive") for h in (st.get("hosts") or [])}
            if alive.get(host) is False:
                break
            time.sleep(0.2)  # polling interval
            st = self.c.status() or {}
        r = self.c.replctl("promote", str(store), "--force", "--json", timeout=60)
        self.log(op="action", action="promote", store=store, rc=r.returncode, old_master=master,
                 waited=round(time.monotonic() - t0, 3),
                 out=(r.stdout.strip() or r.stderr.strip())[-400:])

    def restart_dead(self):
        for h in self.c.hosts.values():
            if not h.daemon.alive():
                h.daemon.start()
        if not self.c.coord.alive():
            self.c.coord.start()

    # --- one fault ----------------------------------------------------------
    def run_fault(self, f):
        """Applies f, holds it, heals it. Returns nothing; logs start/heal."""
        kind, sub = f["kind"], f.get("sub")
        masters = self.masters()
        heal = []  # callables
        affected = []
        info = {}
        promote = []
        if kind == "partition":
            if sub in ("isolate_host", "one_way_in", "one_way_netem"):
                h = f["host"]
                affected = self.stores_on([h])
                n = self.node(h)
                others = self.cluster_nodes_except([h])
                if sub == "isolate_host":
                    netfaults.partition([n], others)
                    if f.get("promote"):
                        promote = self.stores_mastered_on(h, masters)
                elif sub == "one_way_in":
                    netfaults.partition([n], others, one_way=True)
                else:
                    info["mechanism"] = netfaults.egress_loss(n.ns)
                heal.append(lambda n=n: netfaults.heal(n.ns))
                info["host"] = h
            elif sub == "isolate_coord":
                affected = sorted(self.c.stores)
                netfaults.partition([self.c.coord_node], self.cluster_nodes_except(["coord"]))
                heal.append(lambda: netfaults.heal(self.c.coord_node.ns))
            elif sub == "split":
                a, b = f["groups"]
                netfaults.partition([self.node(x) for x in a], [self.node(x) for x in b])
                heal += [lambda x=x: netfaults.heal(self.node(x).ns) for x in a + b]
                affected = sorted(set(self.stores_on(a)) & set(self.stores_on(b)))
                info["groups"] = f["groups"]
            elif sub == "store_split_promote":
                st = self.c.stores[f["store"]]
                m = masters.get(st.id, st.slot_ids[0])
                reps = [i for i in st.slot_ids if i != m]
                b = reps[f["b_index"] % len(reps)]
                side_a = sorted({self.c.slots[m].host, self.c.slots[b].host})
                side_b = [x for x in list(self.c.hosts) + ["coord"] if x not in side_a]
                netfaults.partition([self.node(x) for x in side_a], [self.node(x) for x in side_b])
                heal += [lambda x=x: netfaults.heal(self.node(x).ns) for x in side_a + side_b]
                affected = sorted(set(self.stores_on(side_a)) & set(self.stores_on(side_b)) | {st.id})
                promote = [st.id]
                info.update(groups=[side_a, side_b], old_master=m, with_master=b)
        elif kind == "pause":
            d = self.daemon(f["target"])
            d.pause()
            heal.append(d.resume)
            affected = sorted(self.c.stores) if f["target"] == "coord" else self.stores_on([f["target"]])
            info["target"] = f["target"]
        elif kind in ("kill", "wipe"):
            h = self.c.hosts[f["host"]]
            h.daemon.kill()
            affected = self.stores_on([h.name])
            if kind == "wipe":
                for s in h.slots:
                    st = next((x.id for x in self.c.stores.values() if s.id in x.slot_ids), None)
                    self.data_lost.append((s.id, st, masters.get(st) == s.id))
                    h.disk.wipe(s.data)
                info["wiped"] = [s.id for s in h.slots]
            if f.get("promote"):
                promote = self.stores_mastered_on(h.name, masters)
            heal.append(h.daemon.start)
            info["host"] = h.name
        elif kind == "disk":
            h = self.c.hosts[f["host"]]
            info["filled_bytes"] = h.disk.fill()
            heal.append(h.disk.free)
            affected = self.stores_on([h.name])
            info["host"] = h.name
        elif kind == "clock":
            if sub == "isolated_master_back":
                st = f["store"]
                h = self.c.slots[masters.get(st, self.c.stores[st].slot_ids[0])].host
                d = self.c.hosts[h].daemon
                d.step_clock(f["delta"])
                n = self.node(h)
                netfaults.partition([n], self.cluster_nodes_except([h]))
                heal += [lambda n=n: netfaults.heal(n.ns), lambda d=d: d.step_clock(0)]
                promote = self.stores_mastered_on(h, masters)
                affected = self.stores_on([h])
                info.update(host=h, delta=f["delta"])
            else:
                d = self.daemon(f["target"])
                d.step_clock(f["delta"])
                heal.append(lambda d=d: d.step_clock(0))
                affected = sorted(self.c.stores) if f["target"] == "coord" else self.stores_on([f["target"]])
                info.update(target=f["target"], delta=f["delta"])
        elif kind == "operator":
            if sub == "drain":
                h = f["host"]
                affected = self.stores_mastered_on(h, masters)
                self.log(op="start", kind=kind, sub=sub, affected=affected, host=h)
                r = self.c.replctl("drain", h, timeout=60)
                self.log(op="action", action="drain", host=h, rc=r.returncode, out=r.stdout.strip()[-400:])
                self._hold(f["hold"])
                r = self.c.replctl("undrain", h, timeout=60)
                self.log(op="heal", kind=kind, sub=sub, affected=affected, action="undrain",
                         rc=r.returncode, out=r.stdout.strip()[-400:])
                return
            st = f["store"]
            self.log(op="start", kind=kind, sub=sub, affected=[st], store=st)
            r = self.c.replctl("failover", str(st), timeout=60)
            self.log(op="action", action="failover", store=st, rc=r.returncode,
                     out=(r.stdout.strip() or r.stderr.strip())[-400:])
            self._hold(f["hold"])
            self.log(op="heal", kind=kind, sub=sub, affected=[st])
            return
        self.log(op="start", kind=kind, sub=sub, affected=affected, **info)
        try:
            t0 = time.monotonic()
            for st in promote:
                self.promote(st)
            # Hold the fault; after a promotion hold it a few seconds more so
            # that two masters, if the engine allows them, both take mail.
            rest = f["hold"] - (time.monotonic() - t0) if not promote else 3.0
            self._hold(rest)
        finally:
            for h in heal:
                h()
            self.log(op="heal", kind=kind, sub=sub, affected=affected)

    def _hold(self, seconds):
        if seconds > 0:
            time.sleep(seconds)  # the schedule's hold time, not a wait for a condition

    def run(self, schedule):
        for i, f in enumerate(schedule):
            self.log(op="fault", index=i, fault=f)
            self.run_fault(f)
            self._hold(f["gap"])

    def heal_all(self):
        """Every partition healed, processes running and unpaused, clocks back,
        disks freed."""
        for n in [self.c.coord_node, self.c.client_node] + [h.node for h in self.c.hosts.values()]:
            netfaults.heal(n.ns)
        for d in self.c.daemons():
            if d.paused:
                d.resume()
            if d.clock_offset:
                d.step_clock(0)
        for h in self.c.hosts.values():
            if h.disk.filled:
                h.disk.free()
        self.restart_dead()
        self.log(op="heal_all")
