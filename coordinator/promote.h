// File: coordinator/promote.h
//
// Forced promotion (coordpb.Promote, `replctl promote STORE --force`): an
// unplanned failover when the master's host is gone (design guarantees 2
// and 4). Steps, each database change one Coordinator transaction:
//   a. BeginPromotion: refuse unless forced, the master's host is not alive
//      and a replica's host is; fence the store and raise its epoch to
//      E + 1 at once, master unchanged. The topology bump wakes every long
//      poll: each live replica notes E + 1 and from then on refuses the old
//      master (STALE_EPOCH), which then fences itself at once;
//   b. wait until the old master's lease (leases table) has expired AND
//      lease_ms has passed since (a), plus kPromoteMarginMs (writes its
//      gate let through just before, delivery of the new epoch): the old
//      master, which counts its lease from the heartbeat it sent last, has
//      fenced itself. If its host heartbeats meanwhile, abort: it is back,
//      use a planned failover;
//   c. PromoteMaster: the live replica with the highest last_lsn becomes
//      master at E + 1, unfenced, with the lease; every LSN past its last
//      one that the old master wrote may be lost: the reply and the event
//      give the old master's last report (LSN, age), which bounds the
//      loss from below only if it is newer than the new master's;
//   d. wait (timeout_ms from (c), default 10 s) until it reports MASTER at
//      E + 1, unfenced; DEADLINE_EXCEEDED says the switch is committed.
// Aborting before (c) (the old master's host came back, no live replica,
// shutdown) unfences the store and keeps the master at epoch E + 1: the
// replicas have noted it already, and the old master begins it when it
// returns. The call takes up to 2 x lease_ms + kPromoteMarginMs + timeout.
// With request.wait, a master's host that still counts as alive is first
// waited for (up to 2 x lease_ms more) instead of refused.
// Every time here is on the Coordinator's decision clock (now_ms: monotonic,
// so a wall-clock step on this host does not end the wait early).
//
// Thread-compatible: construct and Run on the io thread.
//
// Example:
//   PromoteRunner promotions(waiter, coordinator);  // coordinator/report_waiter.h
//   absl::StatusOr<coordpb::PromoteReply> r = co_await promotions.Run(request);
#ifndef MAILREPL_COORDINATOR_PROMOTE_H_
#define MAILREPL_COORDINATOR_PROMOTE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "asio.hpp"
#include "coordinator/coordinator.h"
#include "coordinator/report_waiter.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

inline constexpr uint32_t kDefaultPromoteTimeoutMs = 10000;
// Added to the lease wait (docs/operations.md "Why a fenced master stops
// in time": writes in flight, the replicas learning the new epoch).
inline constexpr int64_t kPromoteMarginMs = 1000;

class PromoteRunner {
 public:
  PromoteRunner(ReportWaiter& waiter, Coordinator& coordinator);
  PromoteRunner(const PromoteRunner&) = delete;
  PromoteRunner& operator=(const PromoteRunner&) = delete;

  // One forced promotion (steps above). Errors name the store, slots and
  // hosts: kInvalidArgument (no force), kNotFound, kFailedPrecondition (one
  // in progress; the master's host is alive or came back), kUnavailable (no
  // live replica; shutting down), kDeadlineExceeded (switched, unconfirmed).
  asio::awaitable<absl::StatusOr<coordpb::PromoteReply>> Run(coordpb::Promote request);

 private:
  ReportWaiter& waiter_;
  Coordinator& coordinator_;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_PROMOTE_H_
