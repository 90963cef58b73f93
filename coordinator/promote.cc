#include "coordinator/promote.h"

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

std::string SlotAt(uint64_t slot_id, const std::string& host) {
  return absl::StrCat("slot ", slot_id, "@", host);
}

std::string Ms(int64_t ms) { return absl::FormatDuration(absl::Milliseconds(ms)); }

uint32_t ClampMs(int64_t ms) {
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 0, UINT32_MAX));
}

}  // namespace

PromoteRunner::PromoteRunner(ReportWaiter& waiter, Coordinator& coordinator)
    : waiter_(waiter), coordinator_(coordinator) {}

asio::awaitable<absl::StatusOr<coordpb::PromoteReply>> PromoteRunner::Run(
    coordpb::Promote request) {
  if (!request.force()) {
    co_return absl::InvalidArgumentError(
        "promote is for a master whose host is gone; add --force, or use failover");
  }
  const int64_t start = coordinator_.now_ms();
  if (request.wait()) {
    // Until the master's host no longer counts as alive; a host whose
    // heartbeats keep coming is alive, and BeginPromotion refuses it.
    const int64_t give_up = start + 2 * static_cast<int64_t>(coordinator_.lease_ms());
    while (true) {
      absl::StatusOr<std::optional<int64_t>> until =
          coordinator_.MasterHostAliveUntil(request.store_id());
      if (!until.ok()) co_return until.status();
      if (!until->has_value() || **until > give_up) break;
      LogLine(Severity::kInfo, "promotion waits for the master's host to go silent",
              Kv("store", request.store_id()) + Kv("wait_ms", **until - coordinator_.now_ms()));
      asio::awaitable<absl::StatusOr<bool>> silent =
          waiter_.WaitUntil(**until, [] { return absl::StatusOr<bool>(false); });
      (void)co_await std::move(silent);
      if (waiter_.shutting_down()) {
        co_return absl::UnavailableError("coordinatord is shutting down; promote again");
      }
    }
  }
  // a. Fence the store and raise its epoch.
  absl::StatusOr<PromotionPlan> begun = coordinator_.BeginPromotion(request);
  if (!begun.ok()) co_return begun.status();
  const PromotionPlan plan = *std::move(begun);
  const std::string from = SlotAt(plan.from_slot_id, plan.from_host);
  const int64_t lease_ms = coordinator_.lease_ms();
  // All on the coordinator's monotonic clock (Coordinator::now_ms), which a
  // wall-clock step does not move. The wait is at least lease_ms after the
  // begin whatever the stored expiry says (which, after a reboot of this
  // machine, is only an upper bound: Coordinator::ClampPersistedTimes).
  const int64_t wait_until =
      std::max(plan.lease_expires_ms, plan.began_ms + lease_ms) + kPromoteMarginMs;
  LogLine(Severity::kWarning, "promotion began",
          Kv("store", plan.store_id) + Kv("from", from) + Kv("epoch", plan.epoch) +
              Kv("last_lsn", plan.from_last_lsn) + Kv("wait_ms", wait_until - plan.began_ms) +
              Kv("reason", plan.reason));

  // b. The lease period, unless the old master's host comes back.
  std::function<absl::StatusOr<bool>()> host_back = [&]() -> absl::StatusOr<bool> {
    if (coordinator_.HostHeardAfter(plan.from_host, plan.began_sequence)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the master's host ", plan.from_host,
          " came back during the promotion: use `replctl failover`"));
    }
    return false;
  };
  asio::awaitable<absl::StatusOr<bool>> wait_lease = waiter_.WaitUntil(wait_until, host_back);
  absl::StatusOr<bool> waited = co_await std::move(wait_lease);
  // A replica's vouch lasts at most lease_ms from when it gave it, and it
  // gives none once it applied E + 1 nor past its own coordinator contact
  // + lease + grace (before the begin, or it would have learned E + 1).
  // So the old master's replica path ends by, per replica host, min(when
  // it first said it holds E + 1, began) + lease_ms... capped at began +
  // lease + grace. Wait for the latest; a replica reporting E + 1 shortens
  // the wait (docs/operations.md "Why a fenced master stops in time").
  auto vouch_ends = [&]() -> int64_t {
    int64_t latest = 0;
    const int64_t cap = plan.began_ms + lease_ms + coordinator_.vouch_grace_ms();
    for (const std::string& host : plan.replica_hosts) {
      std::optional<int64_t> since = coordinator_.HoldsSince(host, plan.topology_version);
      latest = std::max(latest, since ? std::min(*since + lease_ms, cap) : cap);
    }
    return latest + kPromoteMarginMs;
  };
  while (waited.ok() && !waiter_.shutting_down()) {
    const int64_t until = vouch_ends();
    if (coordinator_.now_ms() >= until) break;
    LogLine(Severity::kInfo, "promotion waits for replicas that may still vouch",
            Kv("store", plan.store_id) + Kv("from", from) +
                Kv("wait_ms", until - coordinator_.now_ms()));
    std::function<absl::StatusOr<bool>()> sooner = [&]() -> absl::StatusOr<bool> {
      RETURN_IF_ERROR(host_back().status());
      return vouch_ends() < until;
    };
    asio::awaitable<absl::StatusOr<bool>> wait_vouch = waiter_.WaitUntil(until, sooner);
    waited = co_await std::move(wait_vouch);
  }

  absl::StatusOr<Promotion> switched = absl::UnknownError("not switched");
  if (!waited.ok()) {
    switched = waited.status();
  } else if (waiter_.shutting_down()) {
    switched = absl::UnavailableError("coordinatord is shutting down");
  } else if (absl::StatusOr<bool> back = host_back(); !back.ok()) {
    switched = back.status();
  } else {
    // c. Switch to the most up-to-date live replica (one transaction).
    switched = coordinator_.PromoteMaster(plan);
  }
  if (!switched.ok()) {
    const std::string why(switched.status().message());
    absl::Status aborted = coordinator_.AbortPromotion(plan, why);
    LogLine(Severity::kWarning, "promotion aborted",
            Kv("store", plan.store_id) + Kv("from", from) + Kv("why", why) +
                Kv("unfenced", aborted.ok() ? "yes" : aborted.ToString()));
    co_return absl::Status(
        switched.status().code(),
        absl::StrCat("promotion of store ", plan.store_id, " away from ", from, " aborted: ",
                     why,
                     aborted.ok() ? "; the store is unfenced"
                                  : absl::StrCat("; unfencing the store FAILED too: ",
                                                 aborted.message()),
                     "; its master is still ", from, ", at epoch ", plan.epoch,
                     " (it begins that epoch when it returns)"));
  }
  const Promotion& p = *switched;
  const std::string to = SlotAt(p.to_slot_id, p.to_host);
  const uint64_t switch_sequence = coordinator_.report_sequence();
  const int64_t switched_ms = coordinator_.now_ms();
  LogLine(Severity::kWarning, "promotion switched",
          Kv("store", plan.store_id) + Kv("from", from) + Kv("to", to) +
              Kv("epoch", plan.epoch) + Kv("lost_from_lsn", p.lost_from_lsn) +
              Kv("lost_to_lsn", p.lost_to_lsn) +
              Kv("old_master_last_lsn",
                 plan.from_reported ? absl::StrCat(plan.from_last_lsn) : "none") +
              Kv("old_master_report_age_ms", plan.from_report_age_ms));

  // d. The new master confirms.
  const int64_t timeout =
      request.timeout_ms() == 0 ? kDefaultPromoteTimeoutMs : request.timeout_ms();
  asio::awaitable<absl::StatusOr<bool>> wait_serving = waiter_.WaitUntilServing(
      p.to_slot_id, plan.epoch, switch_sequence, switched_ms + timeout);
  absl::StatusOr<bool> confirmed = co_await std::move(wait_serving);
  if (!confirmed.ok() || !*confirmed) {
    std::string detail;
    if (!confirmed.ok()) {
      detail = std::string(confirmed.status().message());
    } else if (waiter_.shutting_down()) {
      detail = "coordinatord is shutting down";
    } else {
      detail = absl::StrCat("no report of it as master at epoch ", plan.epoch, " within ",
                            Ms(timeout), " of the switch");
    }
    LogLine(Severity::kWarning, "promotion unconfirmed",
            Kv("store", plan.store_id) + Kv("to", to) + Kv("why", detail));
    co_return absl::Status(
        waiter_.shutting_down() ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kDeadlineExceeded,
        absl::StrCat("store ", plan.store_id, ": the promotion from ", from, " to ", to,
                     " at epoch ", plan.epoch,
                     " is committed, but the new master did not confirm that it serves (",
                     detail, "); it is not rolled back: check host ", p.to_host,
                     " (replctl status)"));
  }
  coordpb::PromoteReply reply;
  *reply.mutable_store() = p.store;
  reply.set_from_slot_id(plan.from_slot_id);
  reply.set_lost_from_lsn(p.lost_from_lsn);
  reply.set_lost_to_lsn(p.lost_to_lsn);
  if (plan.from_reported) {
    reply.mutable_old_master_report()->set_last_lsn(plan.from_last_lsn);
    reply.mutable_old_master_report()->set_age_ms(static_cast<uint64_t>(plan.from_report_age_ms));
  }
  reply.set_waited_ms(ClampMs(switched_ms - plan.began_ms));
  reply.set_took_ms(ClampMs(coordinator_.now_ms() - start));
  LogLine(Severity::kInfo, "promotion done",
          Kv("store", plan.store_id) + Kv("to", to) + Kv("took_ms", reply.took_ms()));
  co_return reply;
}

}  // namespace mailrepl::coord
