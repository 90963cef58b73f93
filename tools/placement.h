// File: tools/placement.h
//
// Store placement for `replctl plan` and `replctl dev-cluster up`: which
// hosts hold the master and the replicas of every store, chosen so that
// losing any one host moves its masters as evenly as possible over the
// others. Pure functions, no I/O.
//
// Model: H hosts with K slots each; host i (0-based) has slot ids
// i*K+1 .. i*K+K (as dev-cluster numbers them). A store is one master and
// R replicas on R+1 distinct hosts; there are floor(H*K/(R+1)) stores.
// When a host fails, each store it masters fails over to its first replica.
//
// Plan() guarantees distinct hosts per store, at most K slots per host and
// masters per host that differ by at most one. First replicas are placed
// by a max flow with the per-pair cap ceil(m/(H-1)) (seeded round-robin
// over offsets 1..H-1), further replicas by a second max flow; if either
// fails the cap is raised by one until both succeed, so the bound may be
// exceeded only when no such flow exists (none found for H <= 24, K <= 40,
// every R). Evaluate() measures what a placement achieves; it never
// assumes the guarantee, and `replctl plan` prints any excess.
#ifndef MAILREPL_TOOLS_PLACEMENT_H_
#define MAILREPL_TOOLS_PLACEMENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mailrepl::tools {

struct PlacedStore {
  int master = 0;             // host index
  std::vector<int> replicas;  // host indexes; replicas[0] is the failover target
  std::vector<uint64_t> slot_ids;  // master first, then replicas in order
};

struct Placement {
  int hosts = 0;
  int slots_per_host = 0;
  int replicas = 0;
  int wanted_stores = 0;  // floor(H*K/(R+1)); stores.size() is what was placed
  std::vector<PlacedStore> stores;
};

// Masters per host, replicas per host (indexed by host).
std::vector<int> MastersPerHost(const Placement& p);
std::vector<int> ReplicasPerHost(const Placement& p);

// Requires 2 <= hosts, 1 <= slots_per_host, 1 <= replicas < hosts
// (InvalidArgument otherwise).
absl::StatusOr<Placement> Plan(int hosts, int slots_per_host, int replicas);

// Structural invariants: every store has R+1 distinct hosts in range, slot
// ids belong to their host and are used once, no host exceeds K slots.
absl::Status CheckPlacement(const Placement& p);

// What losing one host does.
struct HostFailure {
  int lost = 0;             // host index
  int masters = 0;          // m: masters on the lost host
  int bound = 0;            // ceil(m/(H-1))
  std::vector<int> gain;    // per host: masters gained (0 for the lost host)
  int max_gain = 0;
  bool ok() const { return max_gain <= bound; }
};

struct FailureLoad {
  std::vector<HostFailure> failures;  // one per host, in host order
  bool all_ok = true;                 // every gain within its bound
  int worst_excess = 0;               // max over failures of max_gain - bound (<= 0 if all_ok)
  // The most loaded surviving host over every single-host failure.
  int worst_lost = -1;
  int worst_host = -1;
  int worst_after = 0;   // masters it carries after the failure
  int worst_before = 0;  // masters it carried before
};

FailureLoad Evaluate(const Placement& p);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_PLACEMENT_H_
