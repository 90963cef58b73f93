// File: tools/replctl_plan.h
//
// `replctl plan --hosts H1,H2,... --slots-per-host K [--replicas R]
// [--apply]`: prints a placement (tools/placement.h) as a table of stores,
// the load per host and what losing each host does; --apply creates the
// stores on the coordinator from the registered slots of those hosts.
#ifndef MAILREPL_TOOLS_REPLCTL_PLAN_H_
#define MAILREPL_TOOLS_REPLCTL_PLAN_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/coord.pb.h"
#include "tools/placement.h"

namespace mailrepl::tools {

// --hosts: names, comma-separated ("a,b,c"); or a count N, meaning
// host1..hostN as dev-cluster names them. Names must be distinct.
absl::StatusOr<std::vector<std::string>> ParseHostNames(const std::string& flag);

// The plan with host i's k-th slot (i*K+k) replaced by the k-th of the
// slot ids it registered with the coordinator, in ascending order. Fails
// if a host is unknown or has fewer than K slots; a host with more gets
// a line in notes (its highest ids stay unused).
absl::StatusOr<Placement> MapToRegisteredSlots(const Placement& p,
                                               const std::vector<std::string>& names,
                                               const coordpb::GetStatusReply& status,
                                               std::vector<std::string>* notes);

// What --apply did (or would not do) for one planned store.
struct StoreOutcome {
  int plan_store = 0;      // 1-based, as the table numbers them
  uint64_t store_id = 0;   // the store created; 0 if none
  std::string error;       // why not
};

// Planned stores that use a slot already in a store (one outcome each);
// empty if every planned slot is free.
std::vector<StoreOutcome> TakenSlots(const Placement& p, const coordpb::GetStatusReply& status);

using CoordinatorCall =
    std::function<absl::StatusOr<coordpb::Response>(const coordpb::Request&)>;

// CreateStore per planned store (next free store id, master first), in
// table order; one outcome per store, the coordinator's refusal included.
std::vector<StoreOutcome> CreateStores(const Placement& p, coordpb::Durability durability,
                                       const CoordinatorCall& call);

// The text of `replctl plan`: stores, per-host counts, one line per lost
// host, the worst case.
std::string FormatPlan(const Placement& p, const FailureLoad& load,
                       const std::vector<std::string>& names);
// One line per outcome and a summary.
std::string FormatOutcomes(const Placement& p, const std::vector<StoreOutcome>& outcomes,
                           const std::vector<std::string>& names);
// The same as JSON; applied (may be null) adds what --apply did.
std::string PlanToJson(const Placement& p, const FailureLoad& load,
                       const std::vector<std::string>& names,
                       const std::vector<StoreOutcome>* applied);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_REPLCTL_PLAN_H_
