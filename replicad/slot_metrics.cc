#include "replicad/slot_metrics.h"

#include "replicad/api_service.h"
#include "replicad/lmtp_server.h"
#include "syncclient/sync_server.h"

namespace mailrepl::replicad {

void SlotMetrics::Attach(Slot* slot) {
  MutexLock l(refresh_mu_);
  slot_ = slot;
}

void SlotMetrics::Refresh() {
  if (queued_.exchange(true)) return;  // one is queued and has not started yet
  work_.Post([this] {
    queued_ = false;
    RefreshNow();
  });
}

void SlotMetrics::NoteCommitted(uint64_t lsn) {
  uint64_t seen = last_lsn_.load();
  while (lsn > seen && !last_lsn_.compare_exchange_weak(seen, lsn)) {
  }
}

void SlotMetrics::RefreshNow() {
  MutexLock l(refresh_mu_);
  if (slot_ == nullptr) return;
  const uint64_t last = slot_->last_lsn();
  const uint64_t epoch = slot_->epoch();
  const SlotStats stats = slot_->stats();
  last_lsn_ = last;
  epoch_ = epoch;
  MutexLock sl(stats_mu_);
  stats_ = stats;
}

SlotStats SlotMetrics::stats() const {
  MutexLock l(stats_mu_);
  return stats_;
}

void SlotMetrics::Add(metrics::MetricsBuilder& b, const metrics::Labels& labels, bool serving,
                      const coordpb::SlotStatus& st, uint64_t late_writes) const {
  b.Gauge("mailrepl_slot_serving", "1 if the slot is open and serving its role", labels,
          serving ? 1 : 0);
  b.Gauge("mailrepl_slot_master", "1 if the slot is master of its store", labels,
          st.role() == coordpb::MASTER ? 1 : 0);
  b.Gauge("mailrepl_slot_fenced", "1 if the slot is master but refuses writes", labels,
          st.fenced() ? 1 : 0);
  b.Gauge("mailrepl_slot_epoch", "Epoch of the slot's last record", labels, st.epoch());
  b.Counter("mailrepl_slot_late_writes_total",
            "Writes answered with a temporary failure: durable after the lease had run out",
            labels, late_writes);
  b.Gauge("mailrepl_slot_lsn", "Last durable LSN of the slot", labels, st.last_lsn());
  const SlotStats cs = stats();
  b.Counter("mailrepl_slot_commits_total", "Group commits (one log write and fdatasync each)",
            labels, cs.commits);
  b.Counter("mailrepl_slot_committed_records_total", "Records made durable by group commits",
            labels, cs.records);
  b.Counter("mailrepl_slot_commit_write_seconds_total", "Time group commits spent writing the log",
            labels, absl::ToDoubleSeconds(cs.write_time));
  b.Counter("mailrepl_slot_commit_sync_seconds_total", "Time group commits spent in fdatasync",
            labels, absl::ToDoubleSeconds(cs.sync_time));
  b.Counter("mailrepl_slot_commit_apply_seconds_total",
            "Time group commits spent applying records to the index", labels,
            absl::ToDoubleSeconds(cs.apply_time));
}

void SlotMetrics::AddServers(metrics::MetricsBuilder& b, const metrics::Labels& labels,
                             const lmtp::LmtpServer* lmtp, const api::ApiService* api,
                             const sync::SyncServer* sync_server) const {
  if (lmtp) {
    const lmtp::LmtpServerStats ls = lmtp->stats();
    b.Counter("mailrepl_lmtp_connections_total", "LMTP connections accepted", labels,
              ls.connections_accepted);
    b.Gauge("mailrepl_lmtp_connections_open", "LMTP connections open", labels,
            ls.connections_open);
    b.Counter("mailrepl_lmtp_delivered_total", "Recipients answered 2xx after DATA", labels,
              ls.recipients_delivered);
    b.Counter("mailrepl_lmtp_refused_total", "Recipients answered 4xx/5xx after DATA", labels,
              ls.recipients_refused);
  }
  if (api) {
    const api::ApiServiceStats as = api->stats();
    b.Counter("mailrepl_api_writes_total", "Client API writes acknowledged", labels, as.writes);
    b.Counter("mailrepl_api_refused_writes_total", "Client API writes refused (epoch, role)",
              labels, as.refused_writes);
    b.Counter("mailrepl_api_errors_total", "Client API calls answered with an error", labels,
              as.errors);
  }
  if (sync_server) {
    const sync::SyncServerStats& ss = sync_server->stats();
    b.Counter("mailrepl_sync_records_applied_total", "Records applied as a replica", labels,
              ss.records_applied);
    b.Counter("mailrepl_sync_auth_failures_total", "Sync logins refused", labels,
              ss.auth_failures);
  }
}

}  // namespace mailrepl::replicad
