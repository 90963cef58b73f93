// File: replicad/slot_host.h
//
// One slot of this host, serving the role the coordinator assigned it
// (docs/architecture.md "replicad"). Once the slot belongs to a store, its
// three listeners stay open whatever the role: LMTP and the client API
// (writes pass only the write gate), and the sync server (sessions are
// admitted only while the slot is a replica). A master runs one rolling
// SyncClient per replica of its store.
//
// The write gate (CheckWrite/LmtpGate) lets a write through only when the
// slot is the store's master, the store is not fenced, no replica has told
// it of a newer epoch, and its lease holds: the coordinator answered a
// heartbeat sent less than the lease period ago, or a replica vouches for
// it (a replica vouches only while its own coordinator contact lasts). All
// of it is measured on CLOCK_BOOTTIME (common/clock.h). A write is
// acknowledged only if the lease still held once it was durable
// (HeldWhenDurable); otherwise the client gets a temporary failure.
// docs/operations.md "Leases and fencing" explains the timings.
//
// In sync durability, an acknowledgement waits until a replica has
// acknowledged the write's LSN (durable there), up to sync_timeout; after
// that the client gets a temporary failure (the message stays on the
// master, and a retry may store it twice, as with any MTA retry after a
// lost reply).
//
// Thread-compatible on the io thread, except that the gate, the directory
// and the sync wait are called from pool threads (they use atomics and a
// mutex).
#ifndef MAILREPL_REPLICAD_SLOT_HOST_H_
#define MAILREPL_REPLICAD_SLOT_HOST_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/api.pb.h"
#include "proto/config.pb.h"
#include "proto/coord.pb.h"
#include "replicad/hooks.h"
#include "replicad/lmtp_reply.h"
#include "replicad/metrics_text.h"
#include "replicad/service_address.h"
#include "store/slot.h"

namespace mailrepl {

namespace lmtp {
class LmtpServer;
class SlotBackend;
}  // namespace lmtp
namespace api {
class ApiService;
}  // namespace api
namespace rpc {
class RpcServer;
}  // namespace rpc
namespace sync {
class SyncClient;
class SyncServer;
}  // namespace sync

namespace replicad {

class Salvager;

struct SlotHostOptions {
  std::string secret;
  int lmtp_threads = 16;
  absl::Duration sync_timeout = absl::Seconds(5);
  // Where does a user live? nullopt: in the store of the slot asking; a
  // reply: refuse with it. Called from pool threads.
  std::function<std::optional<lmtp::LmtpReply>(const std::string& user, uint64_t store_id)>
      directory;
  // Asks the host to report the slots' status to the coordinator now
  // (during a failover the coordinator waits for these reports).
  std::function<void()> report_now;
  // Promote/demote hooks (may be null: none). Must outlive the SlotHost.
  Hooks* hooks = nullptr;
  // Records a finished salvage in the coordinator (RecordSalvage); on the
  // io thread. Unset: salvages are not recorded (and stay pending).
  std::function<asio::awaitable<absl::Status>(coordpb::RecordSalvage)> record_salvage;
};

class SlotHost {
 public:
  SlotHost(asio::io_context& io, configpb::SlotConfig config, SlotHostOptions options);
  ~SlotHost();
  SlotHost(const SlotHost&) = delete;
  SlotHost& operator=(const SlotHost&) = delete;

  // Acts on this slot's assignment: creates the slot directory on its first
  // assignment to a store, opens it and its listeners, begins the new epoch
  // as master, starts or stops sync clients. Errors are kept and reported
  // in Status() (other slots of the host go on).
  // A replica vouches for its master until its own coordinator contact +
  // lease + vouch_grace (Assignments.vouch_grace_ms).
  void Apply(const coordpb::SlotAssignment& assignment, const std::string& cluster_id,
             absl::Duration lease, absl::Duration vouch_grace);
  // The coordinator answered a heartbeat sent at `sent`.
  void CoordinatorHeard(absl::Duration sent);  // SinceBoot() when it was sent
  // SIGTERM: stop accepting, let writes in flight finish, stop sync
  // clients. The LMTP server's Run() ends when its connections have.
  void Stop();
  // True once Stop() was called and every server of the slot has ended.
  bool stopped() const {
    return running_servers_ == 0 && links_running_ == 0 && hooks_running_ == 0 &&
           !salvager_running_ &&
           (!service_ || service_->running() == 0);
  }
  // The store's service addresses this slot holds now ("" when none).
  std::string service_lmtp_held() const { return service_ ? service_->lmtp_held() : ""; }

  uint64_t slot_id() const { return config_.slot_id(); }
  coordpb::SlotStatus Status();
  void AddMetrics(metrics::MetricsBuilder& b);
  // For /health: an error that keeps the slot from serving its role.
  std::string error() const { return error_; }

  // OK iff the slot takes writes at `epoch` now (0: at its current epoch).
  absl::Status CheckWrite(uint64_t epoch);

  // replctl check, on the master: compares this slot with each replica
  // (SyncClient mode kCheck, one replica after the other). The master's
  // own --deep verify is the ApiService's part. kFailedPrecondition when
  // this slot is not the master. Called on the io thread; the check itself
  // runs on a thread of its own, so the io thread never waits for it.
  asio::awaitable<absl::StatusOr<checkpb::StoreCheck>> CheckStore(apipb::CheckStore request);

 private:
  // The refusal names the master's LMTP address (lmtp) or its API address.
  absl::Status CheckWriteFor(uint64_t epoch, bool lmtp);

  struct ReplicaLink;
  absl::Status OpenSlot(const coordpb::StoreInfo& store, const std::string& cluster_id);
  absl::Status StartListeners();
  void BecomeMaster(const coordpb::StoreInfo& store);
  void BecomeReplica(const coordpb::StoreInfo& store);
  void StartReplicaLink(const coordpb::SlotInfo& replica);
  void StopReplicaLinks();
  void ReplicaProgress();
  // The sync server's on_diverged (a pool thread): sets aside the records
  // past fork_lsn in a salvage file, rewinds the slot, wakes the salvager.
  absl::Status SetAside(uint64_t fork_lsn, uint64_t master_epoch);
  // Starts the salvager once (it idles while there is nothing to salvage).
  void StartSalvager();
  // The store was fenced: once every write let through is durable, report
  // the last LSN as fenced_lsn.
  asio::awaitable<void> Drain();
  void Report() {
    if (options_.report_now) options_.report_now();
  }
  std::optional<lmtp::LmtpReply> LmtpGate();
  std::optional<lmtp::LmtpReply> AwaitReplica(uint64_t lsn);
  apipb::SlotState State();
  // Until when (BootNanos) the right to write holds: the coordinator's
  // answer to a heartbeat sent at s counts until s + lease; a replica's
  // vouch until the probe it answered + its vouch (0: never heard).
  int64_t HeldUntilNs() const;
  // The sync server's vouch: for how long from now this slot, as a
  // replica, vouches for a master of master_epoch.
  absl::Duration Vouch(uint64_t master_epoch);
  // OK iff the right to write still held at durable_ns (BootNanos, taken
  // right after the write became durable): a write acknowledged only then
  // cannot overlap a promoted master's. Otherwise kUnavailable.
  absl::Status HeldWhenDurable(int64_t durable_ns);
  // Holds the store's service addresses iff this slot is the master taking
  // writes (at every Apply, and every 100 ms for the lease).
  void UpdateServiceAddress();
  asio::awaitable<void> WatchServiceAddress();

  asio::io_context& io_;
  const configpb::SlotConfig config_;
  const SlotHostOptions options_;
  std::unique_ptr<Slot> slot_;
  std::unique_ptr<lmtp::SlotBackend> backend_;
  std::unique_ptr<lmtp::LmtpServer> lmtp_;
  std::unique_ptr<api::ApiService> api_;
  std::unique_ptr<rpc::RpcServer> api_server_;
  std::unique_ptr<sync::SyncServer> sync_server_;
  std::unique_ptr<Salvager> salvager_;
  std::unique_ptr<ServiceAddresses> service_;  // after backend_ and api_: destroyed first
  std::map<uint64_t, std::shared_ptr<ReplicaLink>> replicas_;  // by replica slot id
  int running_servers_ = 0;
  int links_running_ = 0;
  int hooks_running_ = 0;
  // Master taking writes, as UpdateServiceAddress last saw it: its changes
  // run the promote and demote hooks.
  bool holding_ = false;
  bool demote_running_ = false;
  absl::Status demote_status_;   // of the last demote hook
  std::string fence_error_;      // SlotStatus.fence_error
  bool salvager_running_ = false;
  bool stopping_ = false;
  std::string error_;

  // Read by the gate on pool threads.
  mutable std::mutex mu_;
  coordpb::StoreInfo store_;       // GUARDED_BY(mu_)
  coordpb::Role role_ = coordpb::ROLE_NONE;  // GUARDED_BY(mu_)
  std::string master_lmtp_;        // GUARDED_BY(mu_)
  std::string master_api_;         // GUARDED_BY(mu_)
  std::atomic<uint64_t> epoch_{0};
  std::atomic<uint64_t> newer_epoch_{0};  // a replica told us of it
  std::atomic<int64_t> lease_ns_{0};
  std::atomic<int64_t> vouch_grace_ns_{0};
  // BootNanos; 0: never.
  std::atomic<int64_t> coordinator_heard_ns_{0};      // send time of the last answered heartbeat
  std::atomic<int64_t> replica_vouched_until_ns_{0};  // the best replica vouch
  std::atomic<uint64_t> late_writes_{0};  // durable after the right to write ended
  std::atomic<bool> sync_durability_{false};
  std::atomic<bool> fenced_by_coordinator_{false};
  std::atomic<uint64_t> fenced_lsn_{0};
  // Sync durability: the highest LSN a replica acknowledged.
  std::mutex acked_mu_;
  std::condition_variable acked_cv_;
  uint64_t acked_lsn_ = 0;  // GUARDED_BY(acked_mu_)
};

}  // namespace replicad
}  // namespace mailrepl

#endif  // MAILREPL_REPLICAD_SLOT_HOST_H_
