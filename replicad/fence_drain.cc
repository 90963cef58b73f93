#include "replicad/fence_drain.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "replicad/api_service.h"
#include "replicad/slot_backend.h"

namespace mailrepl::replicad {

FenceAndDrain::FenceAndDrain(asio::io_context& io, WriteGate& gate, WorkGate& work,
                             SlotMetrics& metrics, FenceAndDrainOptions options)
    : io_(io),
      gate_(gate),
      work_(work),
      metrics_(metrics),
      options_(std::move(options)),
      wake_(io),
      tick_(io) {}

FenceAndDrain::~FenceAndDrain() = default;

void FenceAndDrain::Attach(Slot& slot, SlotListeners& listeners) {
  slot_ = &slot;
  listeners_ = &listeners;
  store_id_ = slot.identity().store_id;
  service_ = std::make_unique<ServiceAddresses>(io_, listeners.backend(), listeners.api_handler(),
                                                options_.secret,
                                                absl::StrCat("slot", options_.slot_id),
                                                options_.slot_id);
  ++watching_;
  asio::co_spawn(io_, WatchServiceAddress(), [this](std::exception_ptr e) {
    LogExceptions(absl::StrCat("slot ", options_.slot_id, " service address watch"))(e);
    --watching_;
  });
}

void FenceAndDrain::Wake() { wake_.cancel(); }

asio::awaitable<void> FenceAndDrain::WaitForWake() {
  wake_.expires_at(asio::steady_timer::time_point::max());
  asio::error_code ec;
  co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

void FenceAndDrain::ClearFence() {
  ++fence_generation_;
  fenced_lsn_ = 0;
  fence_error_.clear();
  demote_status_ = absl::OkStatus();
  Wake();
}

void FenceAndDrain::Stop() {
  UpdateServiceAddress();  // releases the addresses; runs the demote hook if they were held
  tick_.cancel();
  Wake();
}

void FenceAndDrain::UpdateServiceAddress() {
  if (!service_) return;
  const coordpb::StoreInfo store = gate_.store();
  const std::string lmtp = store.service_lmtp();
  const std::string api = store.service_api();
  const bool master = gate_.role() == coordpb::MASTER;
  const bool stopping = gate_.stopping();
  const bool hold = !stopping && master && gate_.CheckWrite(0).ok();
  if (stopping) {
    service_->Stop();
  } else {
    service_->Want(hold, lmtp, api);
  }
  if (hold == holding_) return;
  holding_ = hold;
  // Promote once the addresses are ours; demote after they are released.
  if (!options_.hooks) return;
  HookEvent event{.event = hold ? "promote" : "demote",
                  .store_id = store_id_,
                  .slot_id = options_.slot_id,
                  .service_lmtp = lmtp,
                  .service_api = api};
  if (!hold) demote_running_ = true;
  ++hooks_running_;
  asio::co_spawn(
      io_,
      [this, event]() -> asio::awaitable<void> {
        absl::Status s = co_await options_.hooks->Run(event);
        if (!s.ok()) {
          LogLine(Severity::kError, "hook failed",
                  Kv("slot", options_.slot_id) + Kv("error", s.message()));
        }
        if (event.event == "demote") {
          demote_status_ = s;
          demote_running_ = false;
          Wake();
        }
        --hooks_running_;
      },
      LogExceptions(absl::StrCat("slot ", options_.slot_id, " ", event.event, " hook")));
}

asio::awaitable<void> FenceAndDrain::WatchServiceAddress() {
  // The lease runs out without an event: look every 100 ms.
  while (!gate_.stopping()) {
    UpdateServiceAddress();
    tick_.expires_after(std::chrono::milliseconds(100));
    asio::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (service_) service_->Stop();
}

void FenceAndDrain::StartDrain() {
  asio::co_spawn(io_, Drain(),
                 LogExceptions(absl::StrCat("slot ", options_.slot_id, " drain")));
}

asio::awaitable<void> FenceAndDrain::Drain() {
  const uint64_t generation = fence_generation_;
  auto current = [&] { return gate_.fenced() && fence_generation_ == generation; };
  // The gate refuses from now on; wait for the writes it let through. The
  // backend wakes us when its last delivery ends (SlotListenerHooks
  // on_lmtp_idle, posted to the io thread), ClearFence when unfenced.
  while (listeners_->backend().Busy() > 0 && current()) co_await WaitForWake();
  co_await listeners_->api().DrainWrites();
  // The demote hook (started when the fence released the addresses) must
  // succeed, or the failover that fenced this slot is aborted.
  while (demote_running_ && current() && !gate_.stopping()) co_await WaitForWake();
  if (!current() || gate_.stopping()) co_return;
  if (!demote_status_.ok()) {
    fence_error_ = std::string(demote_status_.message());
    LogLine(Severity::kError, "master fenced but its demote hook failed: the failover aborts",
            Kv("slot", options_.slot_id) + Kv("error", fence_error_));
    if (options_.report) options_.report();
    co_return;
  }
  // Every write the gate let through is durable: the slot's last LSN now
  // covers them all (read on a worker: the slot's locks may be held).
  Slot* slot = slot_;
  SlotMetrics* metrics = &metrics_;
  const uint64_t last = co_await work_.Run([slot, metrics] {
    metrics->RefreshNow();
    return slot->last_lsn();
  });
  if (!current() || gate_.stopping()) co_return;
  fenced_lsn_ = last;
  LogLine(Severity::kInfo, "master fenced and drained",
          Kv("slot", options_.slot_id) + Kv("lsn", fenced_lsn_.load()));
  if (options_.report) options_.report();
}

}  // namespace mailrepl::replicad
