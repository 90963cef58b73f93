// File: replicad/slot_metrics.h
//
// What one slot reports: its status for the coordinator's heartbeats and
// its samples for /metrics, built on the io thread without asking the slot.
// Slot::last_lsn(), epoch() and stats() take the slot's locks, which a
// group commit, an applier batch or a snapshot import holds for up to
// seconds; the io thread serves every slot of the host and the
// coordinator's heartbeat, so it reads facts kept current here instead.
//
// The last LSN follows every group commit (Slot's on_commit hands it over:
// NoteCommitted). The rest is refreshed on a worker (through the slot's
// WorkGate), one refresh at a time, after every change the SlotHost makes
// (begin epoch, note epoch, rewind) and at every status report; a refresh
// reads all of them from the slot under one lock of its own. A report
// therefore carries an epoch and counters at most one refresh old: the
// same staleness a report has anyway by the time the coordinator reads it.
// (A refresh on every commit took the slot's locks once per commit: 5-19%
// of LMTP throughput in bench/cluster_bench.sh.)
// A change the SlotHost makes itself is refreshed synchronously
// (RefreshNow, on the worker) before the change is announced.
//
// Thread-safe.
#ifndef MAILREPL_REPLICAD_SLOT_METRICS_H_
#define MAILREPL_REPLICAD_SLOT_METRICS_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "proto/coord.pb.h"
#include "replicad/metrics_text.h"
#include "replicad/work_pool.h"
#include "store/slot.h"

namespace mailrepl::lmtp {
class LmtpServer;
}  // namespace mailrepl::lmtp
namespace mailrepl::api {
class ApiService;
}  // namespace mailrepl::api
namespace mailrepl::sync {
class SyncServer;
}  // namespace mailrepl::sync

namespace mailrepl::replicad {

class SlotMetrics {
 public:
  // work must outlive this object.
  explicit SlotMetrics(WorkGate& work) : work_(work) {}
  SlotMetrics(const SlotMetrics&) = delete;
  SlotMetrics& operator=(const SlotMetrics&) = delete;

  // The slot to read (nullptr: none). Before the slot is destroyed, set it
  // to nullptr (after the WorkGate is closed).
  void Attach(Slot* slot);
  // Asks for a refresh on a worker (coalesced); any thread, never blocks.
  void Refresh();
  // Refreshes now. Blocking: on a worker only.
  void RefreshNow();
  // A group commit up to `lsn` is durable and applied (Slot's on_commit):
  // the last LSN follows every commit without a refresh (which would take
  // the slot's locks once per commit). Any thread, never blocks.
  void NoteCommitted(uint64_t lsn);

  uint64_t last_lsn() const { return last_lsn_; }
  uint64_t epoch() const { return epoch_; }
  SlotStats stats() const;

  // The slot's samples (serving, status, commits). `st` is
  // SlotHost::Status().
  void Add(metrics::MetricsBuilder& b, const metrics::Labels& labels, bool serving,
           const coordpb::SlotStatus& st, uint64_t late_writes) const;
  // The listeners' counters (each may be null).
  void AddServers(metrics::MetricsBuilder& b, const metrics::Labels& labels,
                  const lmtp::LmtpServer* lmtp, const api::ApiService* api,
                  const sync::SyncServer* sync_server) const;

 private:
  WorkGate& work_;
  std::atomic<bool> queued_{false};
  // Held by a refresh from its first read to its last store.
  Mutex refresh_mu_;
  Slot* slot_ ABSL_GUARDED_BY(refresh_mu_) = nullptr;
  std::atomic<uint64_t> last_lsn_{0};
  std::atomic<uint64_t> epoch_{0};
  mutable Mutex stats_mu_;
  SlotStats stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_SLOT_METRICS_H_
