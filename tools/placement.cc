#include "tools/placement.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

namespace mailrepl::tools {

namespace {

// Integer max flow (Dinic) on a small graph; edges can be pre-loaded with
// flow (Push) so that the result stays close to a hand-made seed.
class MaxFlow {
 public:
  explicit MaxFlow(int nodes) : adj_(nodes) {}

  // Returns an id for Flow()/Residual()/Push().
  int AddEdge(int from, int to, int cap) {
    edges_.push_back({to, cap, cap});
    adj_[from].push_back(static_cast<int>(edges_.size()) - 1);
    edges_.push_back({from, 0, 0});
    adj_[to].push_back(static_cast<int>(edges_.size()) - 1);
    return static_cast<int>(edges_.size()) - 2;
  }
  int Residual(int e) const { return edges_[e].residual; }
  int Flow(int e) const { return edges_[e].cap - edges_[e].residual; }
  void Push(int e, int amount) {
    edges_[e].residual -= amount;
    edges_[e ^ 1].residual += amount;
  }

  // Augments from source to sink until no path is left; returns the added flow.
  int Run(int source, int sink) {
    int total = 0;
    while (Levels(source, sink)) {
      next_.assign(adj_.size(), 0);
      while (int f = Augment(source, sink, 1 << 30)) total += f;
    }
    return total;
  }

 private:
  struct Edge {
    int to;
    int cap;
    int residual;
  };

  bool Levels(int source, int sink) {
    level_.assign(adj_.size(), -1);
    std::vector<int> queue{source};
    level_[source] = 0;
    for (size_t q = 0; q < queue.size(); ++q) {
      for (int e : adj_[queue[q]]) {
        if (edges_[e].residual > 0 && level_[edges_[e].to] < 0) {
          level_[edges_[e].to] = level_[queue[q]] + 1;
          queue.push_back(edges_[e].to);
        }
      }
    }
    return level_[sink] >= 0;
  }

  int Augment(int node, int sink, int limit) {
    if (node == sink) return limit;
    for (int& i = next_[node]; i < static_cast<int>(adj_[node].size()); ++i) {
      const int e = adj_[node][i];
      const int to = edges_[e].to;
      if (edges_[e].residual <= 0 || level_[to] != level_[node] + 1) continue;
      if (int f = Augment(to, sink, std::min(limit, edges_[e].residual))) {
        Push(e, f);
        return f;
      }
    }
    return 0;
  }

  std::vector<Edge> edges_;
  std::vector<std::vector<int>> adj_;
  std::vector<int> level_, next_;
};

int CeilDiv(int a, int b) { return (a + b - 1) / b; }

// First replicas: first[i][j] = stores mastered on i failing over to j.
// Each host j takes at most replica_cap[j] of them and each pair (i, j) at
// most pair_cap[i]. Seeded round-robin over offsets 1..H-1, completed by a
// max flow. Returns false if not every store gets one.
bool PlaceFirstReplicas(int hosts, const std::vector<int>& masters,
                        const std::vector<int>& pair_cap, const std::vector<int>& replica_cap,
                        std::vector<std::vector<int>>* first) {
  const int source = 0, sink = 1;
  auto m_node = [](int i) { return 2 + i; };
  auto r_node = [&](int j) { return 2 + hosts + j; };
  MaxFlow flow(2 + 2 * hosts);
  std::vector<int> from_source(hosts), to_sink(hosts);
  std::vector<std::vector<int>> pair(hosts, std::vector<int>(hosts, -1));
  int total = 0;
  for (int i = 0; i < hosts; ++i) {
    total += masters[i];
    from_source[i] = flow.AddEdge(source, m_node(i), masters[i]);
    to_sink[i] = flow.AddEdge(r_node(i), sink, replica_cap[i]);
    for (int j = 0; j < hosts; ++j) {
      if (j != i) pair[i][j] = flow.AddEdge(m_node(i), r_node(j), pair_cap[i]);
    }
  }
  // Seed: the t-th store of master i prefers offset 1 + t mod (H-1).
  const int max_masters = *std::max_element(masters.begin(), masters.end());
  for (int t = 0; t < max_masters; ++t) {
    for (int i = 0; i < hosts; ++i) {
      if (t >= masters[i]) continue;
      for (int off = 0; off < hosts - 1; ++off) {
        const int j = (i + 1 + (t + off) % (hosts - 1)) % hosts;
        if (flow.Residual(pair[i][j]) > 0 && flow.Residual(to_sink[j]) > 0) {
          flow.Push(from_source[i], 1);
          flow.Push(pair[i][j], 1);
          flow.Push(to_sink[j], 1);
          break;
        }
      }
    }
  }
  flow.Run(source, sink);
  first->assign(hosts, std::vector<int>(hosts, 0));
  int placed = 0;
  for (int i = 0; i < hosts; ++i) {
    for (int j = 0; j < hosts; ++j) {
      if (j != i) placed += (*first)[i][j] = flow.Flow(pair[i][j]);
    }
  }
  return placed == total;
}

// Further replicas (R-1 per store) on hosts not yet in the store, within
// each host's free slots. Returns false if some store stays short.
bool PlaceFurtherReplicas(int hosts, int further, const std::vector<int>& free_slots,
                          std::vector<PlacedStore>* stores) {
  if (further == 0) return true;
  const int n = static_cast<int>(stores->size());
  const int source = 0, sink = 1;
  auto s_node = [](int s) { return 2 + s; };
  auto h_node = [&](int j) { return 2 + n + j; };
  MaxFlow flow(2 + n + hosts);
  std::vector<int> to_sink(hosts), from_source(n);
  std::vector<std::vector<int>> edge(n, std::vector<int>(hosts, -1));
  for (int j = 0; j < hosts; ++j) to_sink[j] = flow.AddEdge(h_node(j), sink, free_slots[j]);
  for (int s = 0; s < n; ++s) {
    const PlacedStore& st = (*stores)[s];
    from_source[s] = flow.AddEdge(source, s_node(s), further);
    for (int j = 0; j < hosts; ++j) {
      if (j != st.master && j != st.replicas[0]) edge[s][j] = flow.AddEdge(s_node(s), h_node(j), 1);
    }
    // Seed: the hosts after the first replica, in ring order.
    int need = further;
    for (int k = 1; k < hosts && need > 0; ++k) {
      const int j = (st.replicas[0] + k) % hosts;
      if (edge[s][j] >= 0 && flow.Residual(to_sink[j]) > 0) {
        flow.Push(from_source[s], 1);
        flow.Push(edge[s][j], 1);
        flow.Push(to_sink[j], 1);
        --need;
      }
    }
  }
  flow.Run(source, sink);
  for (int s = 0; s < n; ++s) {
    PlacedStore& st = (*stores)[s];
    for (int k = 1; k < hosts; ++k) {  // ring order from the first replica
      const int j = (st.replicas[0] + k) % hosts;
      if (edge[s][j] >= 0 && flow.Flow(edge[s][j]) > 0) st.replicas.push_back(j);
    }
    if (static_cast<int>(st.replicas.size()) != 1 + further) return false;
  }
  return true;
}

}  // namespace

std::vector<int> MastersPerHost(const Placement& p) {
  std::vector<int> n(p.hosts, 0);
  for (const PlacedStore& s : p.stores) ++n[s.master];
  return n;
}

std::vector<int> ReplicasPerHost(const Placement& p) {
  std::vector<int> n(p.hosts, 0);
  for (const PlacedStore& s : p.stores) {
    for (int h : s.replicas) ++n[h];
  }
  return n;
}

absl::StatusOr<Placement> Plan(int hosts, int slots_per_host, int replicas) {
  if (hosts < 2) return absl::InvalidArgumentError("placement needs at least 2 hosts");
  if (slots_per_host < 1) return absl::InvalidArgumentError("slots per host must be >= 1");
  if (replicas < 1 || replicas >= hosts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replicas must be between 1 and hosts - 1 (", replicas, " replicas need ", replicas + 1,
        " hosts, there are ", hosts, ")"));
  }
  Placement p{.hosts = hosts,
              .slots_per_host = slots_per_host,
              .replicas = replicas,
              .wanted_stores = hosts * slots_per_host / (replicas + 1)};
  const int n = p.wanted_stores;
  // Store s is mastered on host s mod H: masters differ by at most one.
  std::vector<int> masters(hosts, 0);
  for (int s = 0; s < n; ++s) ++masters[s % hosts];

  // The bound first; if it cannot be met, the smallest excess over it that
  // can. Per excess: first replicas balanced over the hosts (room for the
  // further replicas), else anywhere with free slots.
  for (int excess = 0; excess <= n; ++excess) {
    std::vector<int> pair_cap(hosts);
    for (int i = 0; i < hosts; ++i) pair_cap[i] = CeilDiv(masters[i], hosts - 1) + excess;
    for (bool balanced : {true, false}) {
      std::vector<int> replica_cap(hosts);
      for (int j = 0; j < hosts; ++j) {
        replica_cap[j] = slots_per_host - masters[j];
        if (balanced) replica_cap[j] = std::min(replica_cap[j], CeilDiv(n, hosts));
      }
      std::vector<std::vector<int>> first;
      if (!PlaceFirstReplicas(hosts, masters, pair_cap, replica_cap, &first)) continue;
      std::vector<PlacedStore> stores(n);
      std::vector<int> free_slots(hosts, slots_per_host);
      for (int s = 0; s < n; ++s) {
        const int i = s % hosts, t = s / hosts;
        // The t-th store of master i: offset 1 + t mod (H-1) if that pair
        // still has stores, else the next offset that has.
        int j = -1;
        for (int off = 0; off < hosts - 1 && j < 0; ++off) {
          const int c = (i + 1 + (t + off) % (hosts - 1)) % hosts;
          if (first[i][c] > 0) j = c;
        }
        --first[i][j];
        stores[s].master = i;
        stores[s].replicas = {j};
        --free_slots[i];
        --free_slots[j];
      }
      if (!PlaceFurtherReplicas(hosts, replicas - 1, free_slots, &stores)) continue;
      // Slot ids: per host in store order.
      std::vector<int> next(hosts, 0);
      for (PlacedStore& st : stores) {
        st.slot_ids.push_back(static_cast<uint64_t>(st.master) * slots_per_host +
                              ++next[st.master]);
        for (int h : st.replicas) {
          st.slot_ids.push_back(static_cast<uint64_t>(h) * slots_per_host + ++next[h]);
        }
      }
      p.stores = std::move(stores);
      return p;
    }
  }
  return absl::InternalError(absl::StrCat("no placement found for ", hosts, " hosts x ",
                                          slots_per_host, " slots, ", replicas, " replicas"));
}

absl::Status CheckPlacement(const Placement& p) {
  std::vector<int> used(p.hosts, 0);
  std::set<uint64_t> slots;
  for (size_t s = 0; s < p.stores.size(); ++s) {
    const PlacedStore& st = p.stores[s];
    std::vector<int> members{st.master};
    members.insert(members.end(), st.replicas.begin(), st.replicas.end());
    if (static_cast<int>(st.replicas.size()) != p.replicas) {
      return absl::InternalError(absl::StrCat("store ", s + 1, " has ", st.replicas.size(),
                                              " replicas, not ", p.replicas));
    }
    if (st.slot_ids.size() != members.size()) {
      return absl::InternalError(absl::StrCat("store ", s + 1, ": slots and hosts differ"));
    }
    std::set<int> distinct;
    for (size_t k = 0; k < members.size(); ++k) {
      const int h = members[k];
      if (h < 0 || h >= p.hosts) return absl::InternalError(absl::StrCat("store ", s + 1, ": bad host"));
      if (!distinct.insert(h).second) {
        return absl::InternalError(absl::StrCat("store ", s + 1, " has two slots on host ", h));
      }
      const uint64_t id = st.slot_ids[k];
      if (id <= static_cast<uint64_t>(h) * p.slots_per_host ||
          id > static_cast<uint64_t>(h + 1) * p.slots_per_host) {
        return absl::InternalError(
            absl::StrCat("store ", s + 1, ": slot ", id, " is not on host ", h));
      }
      if (!slots.insert(id).second) {
        return absl::InternalError(absl::StrCat("slot ", id, " is used twice"));
      }
      if (++used[h] > p.slots_per_host) {
        return absl::InternalError(absl::StrCat("host ", h, " has more than ", p.slots_per_host,
                                                " slots in stores"));
      }
    }
  }
  return absl::OkStatus();
}

FailureLoad Evaluate(const Placement& p) {
  FailureLoad load;
  const std::vector<int> masters = MastersPerHost(p);
  for (int lost = 0; lost < p.hosts; ++lost) {
    HostFailure f{.lost = lost, .masters = masters[lost]};
    f.bound = p.hosts > 1 ? CeilDiv(f.masters, p.hosts - 1) : f.masters;
    f.gain.assign(p.hosts, 0);
    for (const PlacedStore& s : p.stores) {
      if (s.master == lost && !s.replicas.empty()) ++f.gain[s.replicas[0]];
    }
    for (int g = 0; g < p.hosts; ++g) {
      if (g == lost) continue;
      f.max_gain = std::max(f.max_gain, f.gain[g]);
      const int after = masters[g] + f.gain[g];
      if (load.worst_host < 0 || after > load.worst_after) {
        load.worst_lost = lost;
        load.worst_host = g;
        load.worst_after = after;
        load.worst_before = masters[g];
      }
    }
    load.all_ok = load.all_ok && f.ok();
    load.worst_excess = lost == 0 ? f.max_gain - f.bound
                                  : std::max(load.worst_excess, f.max_gain - f.bound);
    load.failures.push_back(std::move(f));
  }
  return load;
}

}  // namespace mailrepl::tools
