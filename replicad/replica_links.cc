#include "replicad/replica_links.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "syncclient/sync_client.h"

namespace mailrepl::replicad {

using asio::awaitable;

// A rolling sync client towards one replica, and what it last reported.
struct ReplicaLinks::Link {
  coordpb::SlotInfo replica;
  std::unique_ptr<sync::SyncClient> client;
  bool running = false;
  bool stop = false;
  absl::Status last_error;
};

ReplicaLinks::ReplicaLinks(asio::io_context& io, WriteGate& gate, ReplicaLinksOptions options)
    : io_(io), gate_(gate), options_(std::move(options)) {}

ReplicaLinks::~ReplicaLinks() = default;

void ReplicaLinks::Follow(const Slot& slot, const coordpb::StoreInfo& store) {
  std::map<uint64_t, const coordpb::SlotInfo*> wanted;
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() != options_.slot_id) wanted[m.slot_id()] = &m;
  }
  for (auto it = links_.begin(); it != links_.end();) {
    auto w = wanted.find(it->first);
    if (w == wanted.end() || w->second->sync_address() != it->second->replica.sync_address()) {
      it->second->stop = true;
      if (it->second->client) it->second->client->Stop();
      it = links_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [id, info] : wanted) {
    if (!links_.contains(id)) Start(slot, *info);
  }
}

void ReplicaLinks::Start(const Slot& slot, const coordpb::SlotInfo& replica) {
  auto link = std::make_shared<Link>();
  link->replica = replica;
  links_[replica.slot_id()] = link;
  // Rolling, woken by the slot's on_durable hook (see Poke) rather than inotify.
  auto rolling = [this, link, paths = slot.paths()] {
    sync::SyncClientOptions o;
    o.slot = paths;
    o.server = link->replica.sync_address();
    o.secret = options_.secret;
    o.mode = sync::SyncClientOptions::Mode::kRolling;
    o.poked_on_commit = true;
    o.on_progress = [this] { Progress(); };
    o.blocking = options_.blocking;
    return o;
  };
  link->client = std::make_unique<sync::SyncClient>(io_, rolling());
  link->running = true;
  ++links_running_;
  // The link is kept alive by this coroutine until Run() returns; a client
  // ended by a permanent error (a newer epoch, a diverged replica) is
  // restarted after a pause unless the link was stopped.
  asio::co_spawn(
      io_,
      [this, link, rolling]() -> awaitable<void> {
        while (!link->stop) {
          absl::Status s = co_await link->client->Run();
          link->last_error = s;
          if (link->stop) break;
          const uint64_t newer = link->client->stats().newer_epoch;
          if (gate_.NoteNewerEpoch(newer)) {
            LogLine(Severity::kWarning, "master fenced: a replica knows a newer epoch",
                    Kv("slot", options_.slot_id) + Kv("replica", link->replica.slot_id()) +
                        Kv("epoch", gate_.epoch()) + Kv("newer_epoch", newer));
          } else {
            LogLine(Severity::kWarning, "sync client ended; restarting",
                    Kv("slot", options_.slot_id) + Kv("replica", link->replica.slot_id()) +
                        Kv("error", s.message()));
          }
          asio::steady_timer pause(io_, std::chrono::seconds(1));
          asio::error_code ec;
          co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          if (link->stop) break;
          link->client = std::make_unique<sync::SyncClient>(io_, rolling());
        }
        link->running = false;
        --links_running_;
      },
      LogExceptions(absl::StrCat("slot ", options_.slot_id, " replica link ",
                                 replica.slot_id())));
}

void ReplicaLinks::StopAll() {
  for (auto& [id, link] : links_) {
    link->stop = true;
    if (link->client) link->client->Stop();
  }
  links_.clear();
}

void ReplicaLinks::Poke(uint64_t lsn) {
  for (auto& [id, link] : links_) {
    if (link->client) link->client->Poke(lsn);
  }
}

void ReplicaLinks::Progress() {
  uint64_t best = 0;
  int64_t vouched = 0;
  for (const auto& [id, link] : links_) {
    if (!link->client) continue;
    best = std::max(best, link->client->stats().acked_lsn);
    vouched = std::max(vouched, link->client->stats().vouched_until_ns);
  }
  gate_.ReplicaVouched(vouched);
  {
    MutexLock lock(acked_mu_);
    acked_lsn_ = std::max(acked_lsn_, best);
  }
  acked_cv_.SignalAll();
  if (options_.on_progress) options_.on_progress();
}

std::optional<lmtp::LmtpReply> ReplicaLinks::AwaitReplica(uint64_t lsn) {
  if (!sync_durability_) return std::nullopt;
  const absl::Duration deadline = SinceBoot() + options_.sync_timeout;
  {
    MutexLock lock(acked_mu_);
    while (acked_lsn_ < lsn) {
      const absl::Duration left = deadline - SinceBoot();
      if (left <= absl::ZeroDuration()) break;
      acked_cv_.WaitFor(lock, left);
    }
    if (acked_lsn_ >= lsn) return std::nullopt;
  }
  return lmtp::LmtpReply{
      451, "4.3.0",
      absl::StrCat("sync durability: no replica confirmed LSN ", lsn, " within ",
                   absl::FormatDuration(options_.sync_timeout), "; retry later")};
}

void ReplicaLinks::AddStatus(coordpb::SlotStatus& s) const {
  for (const auto& [id, link] : links_) {
    coordpb::ReplicaProgress* p = s.add_replicas();
    p->set_slot_id(id);
    const sync::SyncStats& st = link->client->stats();
    p->set_acked_lsn(st.acked_lsn);
    p->set_lag_seconds(st.lag_seconds);
    p->set_connected(st.connected);
  }
}

void ReplicaLinks::AddMetrics(metrics::MetricsBuilder& b, const metrics::Labels& labels,
                              uint64_t last_lsn) const {
  for (const auto& [id, link] : links_) {
    const sync::SyncStats& ss = link->client->stats();
    metrics::Labels rl = labels;
    rl.emplace_back("replica", absl::StrCat(id));
    b.Gauge("mailrepl_replica_acked_lsn", "LSN the replica acknowledged as durable", rl,
            ss.acked_lsn);
    b.Gauge("mailrepl_replica_lag_records", "Records the replica has not acknowledged", rl,
            last_lsn > ss.acked_lsn ? last_lsn - ss.acked_lsn : 0);
    b.Gauge("mailrepl_replica_lag_seconds", "Age of the oldest record the replica lacks", rl,
            ss.lag_seconds);
    b.Gauge("mailrepl_replica_connected", "1 if the sync session to the replica is up", rl,
            ss.connected ? 1 : 0);
    b.Counter("mailrepl_replica_sent_bytes_total", "Bytes sent to the replica on the wire", rl,
              link->client->wire_bytes_now());
    b.Counter("mailrepl_replica_records_total", "Records sent to the replica", rl, ss.records);
  }
}

}  // namespace mailrepl::replicad
