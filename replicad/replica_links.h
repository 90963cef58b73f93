// File: replicad/replica_links.h
//
// A master slot's links to its replicas: one rolling SyncClient per replica
// of its store, restarted after a pause when it ends (unless stopped), and
// what they report: the highest LSN a replica acknowledged as durable, the
// best replica vouch for the master's lease (into the WriteGate), and a
// newer epoch a replica knows (the gate then fences at once).
//
// Sync durability: an acknowledgement waits (AwaitReplica, on a worker)
// until a replica has acknowledged the write's LSN, up to sync_timeout;
// after that the client gets a temporary failure (the message stays on the
// master, and a retry may store it twice, as with any MTA retry after a
// lost reply).
//
// Thread-compatible on the io thread, except AwaitReplica and
// SetSyncDurability (any thread: a mutex and an atomic).
#ifndef MAILREPL_REPLICAD_REPLICA_LINKS_H_
#define MAILREPL_REPLICAD_REPLICA_LINKS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "common/mutex.h"
#include "proto/coord.pb.h"
#include "replicad/lmtp_reply.h"
#include "replicad/metrics_text.h"
#include "replicad/write_gate.h"
#include "store/slot.h"

namespace mailrepl::replicad {

struct ReplicaLinksOptions {
  uint64_t slot_id = 0;
  std::string secret;
  absl::Duration sync_timeout = absl::Seconds(5);
  // After each progress report of a link (io thread).
  std::function<void()> on_progress;
  // Where the sync clients read the slot's files (the host's pool).
  std::optional<asio::any_io_executor> blocking;
};

class ReplicaLinks {
 public:
  // io and gate must outlive this object.
  ReplicaLinks(asio::io_context& io, WriteGate& gate, ReplicaLinksOptions options);
  ~ReplicaLinks();
  ReplicaLinks(const ReplicaLinks&) = delete;
  ReplicaLinks& operator=(const ReplicaLinks&) = delete;

  // One link per replica of the store (every member but `slot`'s own);
  // links to slots no longer in it, or at another address, stop.
  void Follow(const Slot& slot, const coordpb::StoreInfo& store);
  void StopAll();
  // A commit up to lsn is durable: the clients ship it at once.
  void Poke(uint64_t lsn);
  void SetSyncDurability(bool sync) { sync_durability_ = sync; }
  // Sync durability: nullopt once a replica acknowledged lsn, the 451 after
  // sync_timeout. Blocking: on a worker. nullopt at once without sync
  // durability.
  std::optional<lmtp::LmtpReply> AwaitReplica(uint64_t lsn);
  // Links whose client coroutine has not ended.
  int running() const { return links_running_; }
  void AddStatus(coordpb::SlotStatus& s) const;
  void AddMetrics(metrics::MetricsBuilder& b, const metrics::Labels& labels,
                  uint64_t last_lsn) const;

 private:
  struct Link;
  void Start(const Slot& slot, const coordpb::SlotInfo& replica);
  void Progress();

  asio::io_context& io_;
  WriteGate& gate_;
  const ReplicaLinksOptions options_;
  std::map<uint64_t, std::shared_ptr<Link>> links_;  // by replica slot id
  int links_running_ = 0;
  std::atomic<bool> sync_durability_{false};
  // Sync durability: the highest LSN a replica acknowledged.
  Mutex acked_mu_;
  CondVar acked_cv_;
  uint64_t acked_lsn_ ABSL_GUARDED_BY(acked_mu_) = 0;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_REPLICA_LINKS_H_
