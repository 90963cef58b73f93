#include "coordinator/report_waiter.h"

#include <chrono>
#include <optional>
#include <utility>

#include "common/status_macros.h"

namespace mailrepl::coord {

ReportWaiter::ReportWaiter(asio::io_context& io, Coordinator& coordinator)
    : io_(io), coordinator_(coordinator) {}

void ReportWaiter::Wake() {
  for (asio::steady_timer* t : waiters_) t->cancel();
}

void ReportWaiter::Shutdown() {
  shutting_down_ = true;
  Wake();
}

asio::awaitable<absl::StatusOr<bool>> ReportWaiter::WaitUntil(
    int64_t deadline_ms, std::function<absl::StatusOr<bool>()> done) {
  while (true) {
    absl::StatusOr<bool> now_done = done();
    if (!now_done.ok() || *now_done) co_return now_done;
    const int64_t left = deadline_ms - coordinator_.now_ms();
    if (left <= 0 || shutting_down_) co_return false;
    // Wake() cancels the timer; either way, check again.
    asio::steady_timer timer(io_, std::chrono::milliseconds(left));
    waiters_.insert(&timer);
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    waiters_.erase(&timer);
  }
}

asio::awaitable<absl::StatusOr<bool>> ReportWaiter::WaitUntilServing(uint64_t slot_id,
                                                                     uint64_t epoch,
                                                                     uint64_t after_sequence,
                                                                     int64_t deadline_ms) {
  std::function<absl::StatusOr<bool>()> serving = [this, slot_id, epoch,
                                                   after_sequence]() -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(std::optional<SlotReport> r, coordinator_.LastReport(slot_id));
    return r && r->sequence > after_sequence && r->status.role() == coordpb::MASTER &&
           r->status.epoch() == epoch && !r->status.fenced();
  };
  asio::awaitable<absl::StatusOr<bool>> wait = WaitUntil(deadline_ms, std::move(serving));
  co_return co_await std::move(wait);
}

}  // namespace mailrepl::coord
