// File: coordinator/report_waiter.h
//
// The waiting shared by the coroutines that move a store's master (planned
// failover, coordinator/failover.h; forced promotion, coordinator/promote.h):
// wait until a condition over the hosts' reports holds, a deadline on the
// Coordinator's clock (fake in tests) passes, or coordinatord shuts down.
// Waiting is event driven: Wake() (called for every recorded heartbeat)
// re-checks every waiter at once; a steady_timer per waiter ends the wait
// at the deadline if no report comes.
//
// Thread-compatible: construct, wait, Wake and Shutdown on the io thread.
//
// Example:
//   ReportWaiter waiter(io, coordinator);
//   coordinator.SetReportListener([&] { waiter.Wake(); });
//   absl::StatusOr<bool> done = co_await waiter.WaitUntil(deadline_ms, predicate);
#ifndef MAILREPL_COORDINATOR_REPORT_WAITER_H_
#define MAILREPL_COORDINATOR_REPORT_WAITER_H_

#include <cstdint>
#include <functional>
#include <set>

#include "absl/status/statusor.h"
#include "asio.hpp"
#include "coordinator/coordinator.h"

namespace mailrepl::coord {

class ReportWaiter {
 public:
  ReportWaiter(asio::io_context& io, Coordinator& coordinator);
  ReportWaiter(const ReportWaiter&) = delete;
  ReportWaiter& operator=(const ReportWaiter&) = delete;

  // Waits until done() is true (checked now and at every Wake), the
  // deadline (Coordinator::now_ms, the monotonic decision clock) passes, or Shutdown. True: done;
  // false: the deadline passed or shutting_down(); an error from done()
  // ends the wait with it.
  asio::awaitable<absl::StatusOr<bool>> WaitUntil(int64_t deadline_ms,
                                                  std::function<absl::StatusOr<bool>()> done);

  // Until slot_id reports, in a heartbeat numbered after after_sequence
  // (Coordinator::report_sequence), role MASTER at `epoch`, unfenced: the
  // new master serves.
  asio::awaitable<absl::StatusOr<bool>> WaitUntilServing(uint64_t slot_id, uint64_t epoch,
                                                         uint64_t after_sequence,
                                                         int64_t deadline_ms);

  // A report arrived: every waiter re-checks.
  void Wake();
  // Every wait ends (false) now and later ones at once.
  void Shutdown();

  bool shutting_down() const { return shutting_down_; }
  size_t waiting() const { return waiters_.size(); }

 private:
  asio::io_context& io_;
  Coordinator& coordinator_;
  std::set<asio::steady_timer*> waiters_;
  bool shutting_down_ = false;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_REPORT_WAITER_H_
