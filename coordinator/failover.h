// File: coordinator/failover.h
//
// Planned failover (coordpb.Failover; design guarantee 3): the coroutine
// that drives one store from its master to a replica without losing a
// record. Steps, each database change one Coordinator transaction:
//   a. BeginFailover: fence the store, pick the target (the topology bump
//      wakes every long poll, so the master's host learns it at once);
//   b. wait until a report of the master made after (a) carries
//      fenced_lsn X > 0 (every write it let through is durable), then
//      until the target holds X (the master's ReplicaProgress for it, or
//      the target's own last_lsn, in a report made after (a));
//   c. SwitchMaster: target = master, epoch + 1, unfenced, lease;
//   d. wait until the target reports MASTER at the new epoch, unfenced.
// A timeout (timeout_ms from (a), default 10 s) or an error in a-b aborts:
// the store is unfenced and nothing else changed. After (c) nothing is
// rolled back: (d) timing out says the switch is committed but
// unconfirmed (5 s more than the deadline of b).
//
// Waiting (coordinator/report_waiter.h) is event driven: every recorded
// heartbeat re-checks each waiting failover; the deadline is on the
// Coordinator's clock (fake in tests). The waiter's Shutdown() aborts the
// failovers not yet switched and makes the others answer at once.
//
// Thread-compatible: construct and Run on the io thread.
//
// Example:
//   ReportWaiter waiter(io, coordinator);
//   coordinator.SetReportListener([&] { waiter.Wake(); });
//   FailoverRunner failovers(waiter, coordinator);
//   absl::StatusOr<coordpb::FailoverReply> r = co_await failovers.Run(request);
#ifndef MAILREPL_COORDINATOR_FAILOVER_H_
#define MAILREPL_COORDINATOR_FAILOVER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "asio.hpp"
#include "coordinator/coordinator.h"
#include "coordinator/report_waiter.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

inline constexpr uint32_t kDefaultFailoverTimeoutMs = 10000;
// After the switch, how much longer than the deadline the new master has
// to confirm.
inline constexpr int64_t kConfirmGraceMs = 5000;

class FailoverRunner {
 public:
  FailoverRunner(ReportWaiter& waiter, Coordinator& coordinator);
  FailoverRunner(const FailoverRunner&) = delete;
  FailoverRunner& operator=(const FailoverRunner&) = delete;

  // One planned failover (steps above). Errors name the store, slots and
  // hosts: kNotFound, kInvalidArgument, kFailedPrecondition (one in
  // progress), kUnavailable (target host dead, or shutting down),
  // kDeadlineExceeded (timed out; says whether the switch was committed).
  asio::awaitable<absl::StatusOr<coordpb::FailoverReply>> Run(coordpb::Failover request);

 private:
  ReportWaiter& waiter_;
  Coordinator& coordinator_;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_FAILOVER_H_
