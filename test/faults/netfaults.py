"""Network faults inside the node namespaces: nft drop rules by peer address
(both directions, or inbound only), and tc netem loss 100% on a node's
egress. Each node has one nft table "inet mrf_faults" (created on first
use, deleted on heal); every rule lives inside a namespace of the run."""
from netns import in_ns, sh

TABLE = "mrf_faults"


def _nft(ns, script):
    sh(in_ns(ns, ["nft", "-f", "-"]), input=script)


def _ensure_table(ns):
    _nft(ns, """
table inet %(t)s {
  chain input { type filter hook input priority -10; policy accept; }
  chain output { type filter hook output priority -10; policy accept; }
}
""" % {"t": TABLE})


def drop_from(ns, addrs):
    """Node ns drops every packet arriving from addrs (inbound only)."""
    if not addrs:
        return
    _ensure_table(ns)
    _nft(ns, "add rule inet %s input ip saddr { %s } drop\n" % (TABLE, ", ".join(addrs)))


def drop_to(ns, addrs):
    """Node ns drops every packet it sends to addrs (outbound only)."""
    if not addrs:
        return
    _ensure_table(ns)
    _nft(ns, "add rule inet %s output ip daddr { %s } drop\n" % (TABLE, ", ".join(addrs)))


def egress_loss(ns, dev="eth0"):
    """Nothing the node sends arrives: tc netem loss 100% on its egress; if
    this kernel has no netem (sch_netem), an nft rule dropping everything
    it sends on dev. Returns the mechanism used."""
    r = sh(in_ns(ns, ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "loss", "100%"]),
           check=False)
    if r.returncode == 0:
        return "netem"
    _ensure_table(ns)
    _nft(ns, 'add rule inet %s output oifname "%s" drop\n' % (TABLE, dev))
    return "nft-egress"


def heal(ns, dev="eth0"):
    """Removes the node's nft table and netem qdisc (no error if absent)."""
    sh(in_ns(ns, ["nft", "delete", "table", "inet", TABLE]), check=False)
    sh(in_ns(ns, ["tc", "qdisc", "del", "dev", dev, "root"]), check=False)


def partition(nodes_a, nodes_b, one_way=False):
    """Cuts nodes_a from nodes_b (lists of netns.Node). Both ways: each side
    drops inbound from and outbound to the other. One way: only nodes_a
    drop what arrives from nodes_b (b -> a is lost, a -> b gets through)."""
    addrs_a = [a for n in nodes_a for a in n.addrs]
    addrs_b = [a for n in nodes_b for a in n.addrs]
    for n in nodes_a:
        drop_from(n.ns, addrs_b)
        if not one_way:
            drop_to(n.ns, addrs_b)
    if not one_way:
        for n in nodes_b:
            drop_from(n.ns, addrs_a)
            drop_to(n.ns, addrs_a)
