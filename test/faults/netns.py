"""Network topology of a fault-injection run: one network namespace per
node (each replicad host, the coordinator, the clients), each linked by a
veth pair to a Linux bridge that lives in a namespace of its own.

Nothing is created in the root namespace: the veth pairs are created inside
the bridge namespace with their peer moved straight into the node's
namespace, and every address exists only inside a node's namespace.

Names: PREFIX-br (bridge), PREFIX-<node> (nodes), PREFIX = "mrf<pid>".
cleanup_prefix("mrf") removes leftovers of any earlier run.
"""
import ipaddress
import os
import subprocess

NS_DIR = "/run/netns"


def sh(argv, check=True, input=None):
    """Runs argv; returns CompletedProcess (text). Raises on failure if check."""
    r = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                r.stderr.strip() or r.stdout.strip()))
    return r


def in_ns(ns, argv):
    """argv run inside network namespace ns (nsenter keeps the mount namespace
    and execs in place, so the pid of a Popen is the program's pid)."""
    return ["nsenter", "--net=%s/%s" % (NS_DIR, ns), "--"] + list(argv)


class Node:
    """One namespace: a name, its namespace, its addresses (the first is the
    node's own; more may be added, e.g. one per slot)."""

    def __init__(self, name, ns, addrs):
        self.name = name
        self.ns = ns
        self.addrs = list(addrs)


class Topology:
    """Creates the bridge namespace and node namespaces; tears all of it down."""

    def __init__(self, prefix, subnet):
        self.prefix = prefix
        self.net = ipaddress.ip_network(subnet)
        self.bridge_ns = prefix + "-br"
        self.nodes = {}
        self._created = []  # namespaces, for teardown

    def up(self):
        self._add_ns(self.bridge_ns)
        sh(["ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.bridge_ns, "link", "set", "br0", "up"])
        # Bridge netfilter is not loaded for our bridge (no br_netfilter calls
        # needed): filtering happens inside the node namespaces.

    def _add_ns(self, ns):
        sh(["ip", "netns", "add", ns])
        self._created.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def add_node(self, name, addrs):
        """A namespace PREFIX-name with eth0 holding addrs (strings, in the
        subnet), linked to the bridge."""
        ns = "%s-%s" % (self.prefix, name)
        self._add_ns(ns)
        port = "v" + name[:12]
        sh(["ip", "-n", self.bridge_ns, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns])
        sh(["ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0"])
        sh(["ip", "-n", self.bridge_ns, "link", "set", port, "up"])
        for a in addrs:
            sh(["ip", "-n", ns, "addr", "add", "%s/%d" % (a, self.net.prefixlen), "dev", "eth0"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        node = Node(name, ns, addrs)
        self.nodes[name] = node
        return node

    def wait_reachable(self, src, dst_addr, deadline_s=10.0):
        """Polls until a TCP connect from node src to dst_addr port 1 is
        refused (an RST: the address answers) rather than timing out."""
        probe = ("import socket,sys\ns=socket.socket(); s.settimeout(0.5)\n"
                 "try: s.connect((sys.argv[1], 1))\n"
                 "except ConnectionRefusedError: sys.exit(0)\n"
                 "except OSError: sys.exit(1)\n")
        import time
        end = time.monotonic() + deadline_s
        while True:
            r = sh(in_ns(self.nodes[src].ns, ["python3", "-c", probe, dst_addr]), check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > end:
                raise RuntimeError("%s cannot reach %s" % (src, dst_addr))

    def down(self):
        for ns in reversed(self._created):
            delete_ns(ns)
        self._created = []


def delete_ns(ns):
    # Deleting a namespace deletes its veth ends (and their peers), its nft
    # tables and its qdiscs.
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def list_ns(prefix):
    try:
        return sorted(n for n in os.listdir(NS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def pids_in_ns(ns):
    """Pids of processes whose network namespace is ns (by inode)."""
    try:
        target = os.stat(os.path.join(NS_DIR, ns)).st_ino
    except FileNotFoundError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.stat("/proc/%s/ns/net" % p).st_ino == target:
                out.append(int(p))
        except OSError:
            pass
    return out
