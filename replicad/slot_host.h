// File: replicad/slot_host.h
//
// One slot of this host, serving the role the coordinator assigned it
// (docs/architecture.md "replicad"). SlotHost wires the slot's parts:
//
//   WriteGate      (write_gate.h)     role, epoch, fence, lease; the checks
//   ReplicaLinks   (replica_links.h)  a master's sync clients, acked LSN,
//                                     the sync-durability wait
//   SlotListeners  (slot_listeners.h) LMTP, client API, sync server
//   FenceAndDrain  (fence_drain.h)    drain on a fence, hooks, service
//                                     addresses
//   SlotMetrics    (slot_metrics.h)   status and /metrics from facts kept
//                                     current off the io thread
//   WorkGate       (work_pool.h)      this slot's bounded share of the
//                                     host's worker pool
//
// Once the slot belongs to a store, its three listeners stay open whatever
// the role. Apply() acts on an assignment in two steps: at once, on the io
// thread, everything that only restricts (a fence, a master's demotion, a
// newer epoch that a replica stops vouching for), so the coordinator
// contact counted right after Apply() returns (CoordinatorLink::Absorb)
// never renews a right to write the assignment took away; then, in order,
// one assignment at a time, what needs the disk (opening the slot,
// BeginEpoch's fsync as master, NoteEpochSeen as replica), on a worker,
// after which the new role takes effect. A newer assignment supersedes one
// still in progress. While a replica or idle slot is becoming master it
// reports no role, admits no session and vouches for no one.
//
// Thread-compatible on the io thread, except that the gate, the directory
// and the sync wait are called from pool threads (see the parts).
#ifndef MAILREPL_REPLICAD_SLOT_HOST_H_
#define MAILREPL_REPLICAD_SLOT_HOST_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/api.pb.h"
#include "proto/check.pb.h"
#include "proto/config.pb.h"
#include "proto/coord.pb.h"
#include "replicad/fence_drain.h"
#include "replicad/hooks.h"
#include "replicad/lmtp_reply.h"
#include "replicad/metrics_text.h"
#include "replicad/replica_links.h"
#include "replicad/slot_listeners.h"
#include "replicad/slot_metrics.h"
#include "replicad/work_pool.h"
#include "replicad/write_gate.h"
#include "store/slot.h"

namespace mailrepl::replicad {

class Salvager;

struct SlotHostOptions {
  std::string secret;
  absl::Duration sync_timeout = absl::Seconds(5);
  // Where the slot's blocking work runs (the host's pool). Required; must
  // outlive the SlotHost.
  HostPool* pool = nullptr;
  // The most workers of the pool this slot's work holds at once (0:
  // max(2, pool threads / 2)).
  int max_workers = 0;
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
  // After the io_context stopped: waits for this slot's work on the pool.
  ~SlotHost();
  SlotHost(const SlotHost&) = delete;
  SlotHost& operator=(const SlotHost&) = delete;

  // Acts on this slot's assignment (see the file comment): creates the
  // slot directory on its first assignment to a store, opens it and its
  // listeners, begins the new epoch as master, starts or stops sync
  // clients. Errors are kept and reported in Status() (other slots of the
  // host go on). A replica vouches for its master until its own
  // coordinator contact + lease + vouch_grace (Assignments.vouch_grace_ms).
  void Apply(const coordpb::SlotAssignment& assignment, const std::string& cluster_id,
             absl::Duration lease, absl::Duration vouch_grace);
  // The coordinator answered a heartbeat sent at `sent`.
  void CoordinatorHeard(absl::Duration sent) { gate_.CoordinatorHeard(sent); }
  // SIGTERM: stop accepting, let writes in flight finish, stop sync
  // clients. The LMTP server's Run() ends when its connections have.
  void Stop();
  // True once Stop() was called and every server of the slot has ended.
  bool stopped() const {
    return running_servers_ == 0 && links_.running() == 0 && fence_.running() == 0 &&
           !salvager_running_ && !applying_;
  }
  // The store's service addresses this slot holds now ("" when none).
  std::string service_lmtp_held() const { return fence_.service_lmtp_held(); }

  uint64_t slot_id() const { return config_.slot_id(); }
  // Without blocking (the slot's numbers as last refreshed; see
  // slot_metrics.h).
  coordpb::SlotStatus Status();
  void AddMetrics(metrics::MetricsBuilder& b);
  // For /health: an error that keeps the slot from serving its role.
  std::string error() const { return error_; }

  // OK iff the slot takes writes at `epoch` now (0: at its current epoch).
  absl::Status CheckWrite(uint64_t epoch) const { return gate_.CheckWrite(epoch); }

  // replctl check, on the master: compares this slot with each replica
  // (SyncClient mode kCheck, one replica after the other). The master's
  // own --deep verify is the ApiService's part. kFailedPrecondition when
  // this slot is not the master. Called on the io thread; the check itself
  // runs on a thread of its own, so the io thread never waits for it.
  asio::awaitable<absl::StatusOr<checkpb::StoreCheck>> CheckStore(apipb::CheckStore request);

 private:
  struct Pending {
    coordpb::SlotAssignment assignment;
    std::string cluster_id;
  };
  // Applies what restricts the gate at once (see the file comment).
  void Restrict(const coordpb::SlotAssignment& assignment);
  // Works through the pending assignments, one at a time.
  asio::awaitable<void> ApplyLoop();
  asio::awaitable<void> ApplyOne(Pending p);
  asio::awaitable<absl::Status> OpenSlot(const coordpb::StoreInfo& store,
                                         const std::string& cluster_id);
  asio::awaitable<void> BecomeMaster(const coordpb::StoreInfo& store, uint64_t generation);
  asio::awaitable<void> BecomeReplica(const coordpb::StoreInfo& store, uint64_t generation);
  // The sync server's on_diverged (a pool thread): sets aside the records
  // past fork_lsn in a salvage file, rewinds the slot, wakes the salvager.
  absl::Status SetAside(uint64_t fork_lsn, uint64_t master_epoch);
  // Starts the salvager once (it idles while there is nothing to salvage).
  void StartSalvager();
  void Report() {
    if (options_.report_now) options_.report_now();
  }

  asio::io_context& io_;
  const configpb::SlotConfig config_;
  const SlotHostOptions options_;
  // Declared in the order they are built; destroyed in reverse: the parts
  // that use the slot before the slot, the service addresses (in fence_)
  // before the listeners they serve, the gate's work before all.
  WriteGate gate_;
  WorkGate work_;
  SlotMetrics metrics_;
  ReplicaLinks links_;
  std::unique_ptr<Slot> slot_;
  std::unique_ptr<SlotListeners> listeners_;
  FenceAndDrain fence_;
  std::unique_ptr<Salvager> salvager_;
  int running_servers_ = 0;
  bool salvager_running_ = false;
  std::string error_;
  // The assignments: the latest one not applied yet, and whether ApplyLoop
  // runs. generation_ counts Apply() calls: a step that finds it changed
  // leaves the rest to the newer assignment.
  std::optional<Pending> pending_;
  bool applying_ = false;
  uint64_t generation_ = 0;
  // The coordinator's fence as the last assignment applied saw it: a fence
  // that was not there before starts the drain.
  bool fence_applied_ = false;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_SLOT_HOST_H_
