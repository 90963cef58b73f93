#include "coordinator/failover.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace mailrepl::coord {
namespace {

// What one failover learned from the reports made after it began.
struct Progress {
  bool master_reported = false;  // a report of the master arrived after the begin
  uint64_t fenced_lsn = 0;       // X: the master's fenced_lsn (0: not yet)
  uint64_t target_lsn = 0;       // the highest LSN the target is known to hold
  std::string fence_error;       // the master could not be demoted (its hook failed)
};

// Folds the master's and the target's latest reports into p, if they
// arrived after the failover began (older ones may predate the fence).
absl::Status Observe(Coordinator& c, const FailoverPlan& plan, Progress& p) {
  ASSIGN_OR_RETURN(std::optional<SlotReport> master, c.LastReport(plan.from_slot_id));
  if (master && master->sequence > plan.began_sequence) {
    p.master_reported = true;
    p.fenced_lsn = std::max(p.fenced_lsn, master->status.fenced_lsn());
    if (!master->status.fence_error().empty()) p.fence_error = master->status.fence_error();
    for (const coordpb::ReplicaProgress& r : master->status.replicas()) {
      if (r.slot_id() == plan.to_slot_id) p.target_lsn = std::max(p.target_lsn, r.acked_lsn());
    }
  }
  ASSIGN_OR_RETURN(std::optional<SlotReport> target, c.LastReport(plan.to_slot_id));
  if (target && target->sequence > plan.began_sequence) {
    p.target_lsn = std::max(p.target_lsn, target->status.last_lsn());
  }
  return absl::OkStatus();
}

std::string SlotAt(uint64_t slot_id, const std::string& host) {
  return absl::StrCat("slot ", slot_id, "@", host);
}

std::string Ms(int64_t ms) { return absl::FormatDuration(absl::Milliseconds(ms)); }

}  // namespace

FailoverRunner::FailoverRunner(ReportWaiter& waiter, Coordinator& coordinator)
    : waiter_(waiter), coordinator_(coordinator) {}

asio::awaitable<absl::StatusOr<coordpb::FailoverReply>> FailoverRunner::Run(
    coordpb::Failover request) {
  const int64_t start = coordinator_.now_ms();
  // a. Fence and pick the target.
  absl::StatusOr<FailoverPlan> begun = coordinator_.BeginFailover(request);
  if (!begun.ok()) co_return begun.status();
  const FailoverPlan plan = *std::move(begun);
  const std::string from = SlotAt(plan.from_slot_id, plan.from_host);
  const std::string to = SlotAt(plan.to_slot_id, plan.to_host);
  LogLine(Severity::kInfo, "failover began",
          Kv("store", plan.store_id) + Kv("from", from) + Kv("to", to) +
              Kv("reason", plan.reason));
  const int64_t timeout =
      request.timeout_ms() == 0 ? kDefaultFailoverTimeoutMs : request.timeout_ms();
  const int64_t deadline = plan.began_ms + timeout;

  // b. The master's fenced LSN X, then the target holding X.
  Progress progress;
  std::function<absl::StatusOr<bool>()> caught_up = [&]() -> absl::StatusOr<bool> {
    RETURN_IF_ERROR(Observe(coordinator_, plan, progress));
    return !progress.fence_error.empty() ||
           (progress.fenced_lsn > 0 && progress.target_lsn >= progress.fenced_lsn);
  };
  asio::awaitable<absl::StatusOr<bool>> wait_caught_up = waiter_.WaitUntil(deadline, caught_up);
  absl::StatusOr<bool> held = co_await std::move(wait_caught_up);

  absl::StatusOr<coordpb::StoreInfo> switched = absl::UnknownError("not switched");
  std::string why;
  absl::StatusCode code = absl::StatusCode::kDeadlineExceeded;
  if (!held.ok()) {
    why = absl::StrCat("the failover failed while waiting: ", held.status().message());
    code = held.status().code();
  } else if (!progress.fence_error.empty()) {
    why = absl::StrCat("master ", from, " could not be demoted: ", progress.fence_error);
    code = absl::StatusCode::kFailedPrecondition;
  } else if (!*held && waiter_.shutting_down()) {
    why = "coordinatord is shutting down";
    code = absl::StatusCode::kUnavailable;
  } else if (!*held && progress.fenced_lsn == 0) {
    why = absl::StrCat(
        "master ", from,
        progress.master_reported ? " reported no fenced LSN (writes not drained)"
                                 : " did not report since the failover began",
        " within ", Ms(timeout));
  } else if (!*held) {
    why = absl::StrCat("replica ", to, " had LSN ", progress.target_lsn, " of ",
                       progress.fenced_lsn, " after ", Ms(timeout));
  } else {
    // c. Switch (one transaction). If it fails, nothing switched: abort.
    switched = coordinator_.SwitchMaster(plan, progress.fenced_lsn);
    if (!switched.ok()) {
      why = absl::StrCat("the switch failed: ", switched.status().message());
      code = switched.status().code();
    }
  }
  if (!switched.ok()) {
    // e. Unfence; nothing else changed.
    absl::Status aborted = coordinator_.AbortFailover(plan, why);
    LogLine(Severity::kWarning, "failover aborted",
            Kv("store", plan.store_id) + Kv("from", from) + Kv("to", to) + Kv("why", why) +
                Kv("unfenced", aborted.ok() ? "yes" : aborted.ToString()));
    co_return absl::Status(
        code, absl::StrCat("failover of store ", plan.store_id, " from ", from, " to ", to,
                           " aborted: ", why,
                           aborted.ok() ? "; the store is unfenced and nothing changed"
                                        : absl::StrCat("; unfencing the store FAILED too: ",
                                                       aborted.message()),
                           "; the master keeps its role"));
  }
  const uint64_t switch_sequence = coordinator_.report_sequence();
  const uint64_t new_epoch = plan.epoch + 1;
  LogLine(Severity::kInfo, "failover switched",
          Kv("store", plan.store_id) + Kv("from", from) + Kv("to", to) +
              Kv("lsn", progress.fenced_lsn) + Kv("epoch", new_epoch));

  // d. The new master confirms: MASTER at the new epoch, unfenced.
  asio::awaitable<absl::StatusOr<bool>> wait_serving = waiter_.WaitUntilServing(
      plan.to_slot_id, new_epoch, switch_sequence, deadline + kConfirmGraceMs);
  absl::StatusOr<bool> confirmed = co_await std::move(wait_serving);
  if (!confirmed.ok() || !*confirmed) {
    const std::string detail =
        !confirmed.ok()           ? std::string(confirmed.status().message())
        : waiter_.shutting_down() ? std::string("coordinatord is shutting down")
                                  : absl::StrCat("no report of it as master at epoch ",
                                                 new_epoch, " by ",
                                                 Ms(deadline + kConfirmGraceMs - start),
                                                 " after the start");
    LogLine(Severity::kWarning, "failover unconfirmed",
            Kv("store", plan.store_id) + Kv("to", to) + Kv("why", detail));
    co_return absl::Status(
        waiter_.shutting_down() ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kDeadlineExceeded,
        absl::StrCat("store ", plan.store_id, ": the switch from ", from, " to ", to,
                     " at LSN ", progress.fenced_lsn, ", epoch ", plan.epoch, " -> ", new_epoch,
                     " is committed, but the new master did not confirm that it serves (",
                     detail, "); it is not rolled back: check host ", plan.to_host,
                     " (replctl status)"));
  }
  coordpb::FailoverReply reply;
  *reply.mutable_store() = *std::move(switched);
  reply.set_from_slot_id(plan.from_slot_id);
  reply.set_switch_lsn(progress.fenced_lsn);
  reply.set_took_ms(static_cast<uint32_t>(std::max<int64_t>(0, coordinator_.now_ms() - start)));
  LogLine(Severity::kInfo, "failover done",
          Kv("store", plan.store_id) + Kv("to", to) + Kv("took_ms", reply.took_ms()));
  co_return reply;
}

}  // namespace mailrepl::coord
