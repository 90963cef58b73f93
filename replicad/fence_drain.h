// File: replicad/fence_drain.h
//
// The fence-and-drain sequence of a master slot, and what moves with the
// right to write: the store's service addresses and the promote/demote
// hooks (docs/operations.md "Leases and fencing", "Planned failover",
// "Service addresses").
//
// The service addresses are held iff the slot is the master taking writes
// (checked at every assignment, and every 100 ms for the lease, which runs
// out without an event). Promote runs once the addresses are ours; demote
// after they are released.
//
// When the coordinator fences the store (a planned failover), the gate
// refuses from then on; Drain waits for the writes it let through (LMTP
// deliveries and API writes), then for the demote hook, and reports the
// slot's last LSN as fenced_lsn, which covers every write this slot will
// ever acknowledge at its epoch. A failed demote hook becomes fence_error
// instead, and the failover aborts. The waits are signalled (Wake), not
// polled.
//
// Thread-compatible: on the io thread (Wake may be posted to it).
#ifndef MAILREPL_REPLICAD_FENCE_DRAIN_H_
#define MAILREPL_REPLICAD_FENCE_DRAIN_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "asio.hpp"
#include "replicad/hooks.h"
#include "replicad/service_address.h"
#include "replicad/slot_listeners.h"
#include "replicad/slot_metrics.h"
#include "replicad/work_pool.h"
#include "replicad/write_gate.h"
#include "store/slot.h"

namespace mailrepl::replicad {

struct FenceAndDrainOptions {
  uint64_t slot_id = 0;
  std::string secret;
  Hooks* hooks = nullptr;  // may be null: none
  // Reports the slot's status to the coordinator now.
  std::function<void()> report;
};

class FenceAndDrain {
 public:
  // io, gate, work and metrics must outlive this object.
  FenceAndDrain(asio::io_context& io, WriteGate& gate, WorkGate& work, SlotMetrics& metrics,
                FenceAndDrainOptions options);
  ~FenceAndDrain();
  FenceAndDrain(const FenceAndDrain&) = delete;
  FenceAndDrain& operator=(const FenceAndDrain&) = delete;

  // Once the slot and its listeners exist (they must outlive this object):
  // creates the service addresses and starts watching the lease.
  void Attach(Slot& slot, SlotListeners& listeners);
  // Holds the store's service addresses iff this slot is the master taking
  // writes; runs the promote and demote hooks on changes.
  void UpdateServiceAddress();
  // The store was fenced by the coordinator just now: drain (a coroutine).
  void StartDrain();
  // The store is not fenced (any more): forget the last fence.
  void ClearFence();
  // A condition a wait of Drain depends on may have changed.
  void Wake();
  // SIGTERM: releases the addresses (running the demote hook if held).
  void Stop();

  uint64_t fenced_lsn() const { return fenced_lsn_; }
  const std::string& fence_error() const { return fence_error_; }
  std::string service_lmtp_held() const { return service_ ? service_->lmtp_held() : ""; }
  // Hooks, address listeners and the lease watch not ended yet.
  int running() const {
    return hooks_running_ + watching_ + (service_ ? service_->running() : 0);
  }

 private:
  asio::awaitable<void> Drain();
  asio::awaitable<void> WatchServiceAddress();
  // Waits for Wake() (or Stop()).
  asio::awaitable<void> WaitForWake();

  asio::io_context& io_;
  WriteGate& gate_;
  WorkGate& work_;
  SlotMetrics& metrics_;
  const FenceAndDrainOptions options_;
  Slot* slot_ = nullptr;
  SlotListeners* listeners_ = nullptr;
  uint64_t store_id_ = 0;
  std::unique_ptr<ServiceAddresses> service_;
  asio::steady_timer wake_;
  asio::steady_timer tick_;
  int hooks_running_ = 0;
  int watching_ = 0;
  // Master taking writes, as UpdateServiceAddress last saw it: its changes
  // run the promote and demote hooks.
  bool holding_ = false;
  bool demote_running_ = false;
  absl::Status demote_status_;  // of the last demote hook
  std::string fence_error_;     // SlotStatus.fence_error
  // Counts ClearFence(): a drain of an earlier fence reports nothing.
  uint64_t fence_generation_ = 0;
  std::atomic<uint64_t> fenced_lsn_{0};
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_FENCE_DRAIN_H_
