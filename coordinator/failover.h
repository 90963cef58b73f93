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
// Waiting is event driven: Wake() (every recorded heartbeat) re-checks
// each waiting failover; the deadline is on the Coordinator's clock (fake
// in tests), checked at every wake and by a steady_timer.
//
// Thread-compatible: construct, Run, Wake and Shutdown on the io thread.
//
// Example:
//   FailoverRunner failovers(io, coordinator);
//   coordinator.SetReportListener([&] { failovers.Wake(); });
//   absl::StatusOr<coordpb::FailoverReply> r = co_await failovers.Run(request);
#ifndef MAILREPL_COORDINATOR_FAILOVER_H_
#define MAILREPL_COORDINATOR_FAILOVER_H_

#include <cstdint>
#include <functional>
#include <set>

#include "absl/status/statusor.h"
#include "asio.hpp"
#include "coordinator/coordinator.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

inline constexpr uint32_t kDefaultFailoverTimeoutMs = 10000;
// After the switch, how much longer than the deadline the new master has
// to confirm.
inline constexpr int64_t kConfirmGraceMs = 5000;

class FailoverRunner {
 public:
  FailoverRunner(asio::io_context& io, Coordinator& coordinator);
  FailoverRunner(const FailoverRunner&) = delete;
  FailoverRunner& operator=(const FailoverRunner&) = delete;

  // One planned failover (steps above). Errors name the store, slots and
  // hosts: kNotFound, kInvalidArgument, kFailedPrecondition (one in
  // progress), kUnavailable (target host dead, or shutting down),
  // kDeadlineExceeded (timed out; says whether the switch was committed).
  asio::awaitable<absl::StatusOr<coordpb::FailoverReply>> Run(coordpb::Failover request);

  // A report arrived: every waiting failover re-checks.
  void Wake();
  // Failovers before their switch abort; after it, they answer at once.
  void Shutdown();

  size_t waiting() const { return waiters_.size(); }

 private:
  // Waits until done() is true (checked now and at every Wake), the
  // deadline (Coordinator clock, Unix ms) passes, or Shutdown. True: done.
  asio::awaitable<absl::StatusOr<bool>> WaitUntil(int64_t deadline_ms,
                                                  std::function<absl::StatusOr<bool>()> done);

  asio::io_context& io_;
  Coordinator& coordinator_;
  std::set<asio::steady_timer*> waiters_;
  bool shutting_down_ = false;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_FAILOVER_H_
