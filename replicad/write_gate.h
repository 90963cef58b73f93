// File: replicad/write_gate.h
//
// The write gate of one slot: its role, epoch, fence and lease, and the
// decisions made from them (docs/operations.md "Leases and fencing"; this
// is safety-critical code).
//
// A write passes (CheckWrite/LmtpGate) only when the slot is the store's
// master, the store is not fenced, no replica has told it of a newer epoch,
// and its lease holds: the coordinator answered a heartbeat sent less than
// the lease period ago, or a replica vouches for it (a replica vouches only
// while its own coordinator contact lasts). All of it is measured on
// CLOCK_BOOTTIME (common/clock.h). A write is acknowledged only if the
// lease still held once it was durable (HeldWhenDurable); otherwise the
// client gets a temporary failure.
//
// As a replica, the gate answers the sync server: Admit (sessions only
// while a replica) and Vouch (for how long it vouches for a master's lease).
//
// The *At variants take the time (BootNanos) explicitly, for tests.
//
// Thread-safe: the setters run on the io thread; the checks are called from
// the io thread and from pool threads (atomics, and a mutex for the store).
#ifndef MAILREPL_REPLICAD_WRITE_GATE_H_
#define MAILREPL_REPLICAD_WRITE_GATE_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "proto/api.pb.h"
#include "proto/coord.pb.h"
#include "replicad/lmtp_reply.h"

namespace mailrepl::replicad {

std::string RoleName(coordpb::Role role);

class WriteGate {
 public:
  explicit WriteGate(uint64_t slot_id) : slot_id_(slot_id) {}
  WriteGate(const WriteGate&) = delete;
  WriteGate& operator=(const WriteGate&) = delete;

  // --- what the gate knows (set on the io thread) ---
  // A replica vouches for its master until its own coordinator contact +
  // lease + vouch_grace (Assignments.vouch_grace_ms).
  void SetLease(absl::Duration lease, absl::Duration vouch_grace);
  // The store's topology (master addresses for refusals, service addresses).
  void SetStore(const coordpb::StoreInfo& store);
  // Returns the role before.
  coordpb::Role SetRole(coordpb::Role role);
  void SetEpoch(uint64_t epoch) { epoch_ = epoch; }
  // Returns whether the store was fenced before.
  bool SetFenced(bool fenced) { return fenced_by_coordinator_.exchange(fenced); }
  // A replica answered STALE_EPOCH with `newer`: fenced at once, without
  // waiting for the lease. Returns true if newer is above the epoch.
  bool NoteNewerEpoch(uint64_t newer);
  void ClearNewerEpoch() { newer_epoch_ = 0; }
  // The coordinator answered a heartbeat sent at `sent` (SinceBoot()).
  void CoordinatorHeard(absl::Duration sent);
  // The best replica vouch: until when (BootNanos) a replica vouches.
  void ReplicaVouched(int64_t until_ns);
  void SetStopping() { stopping_ = true; }

  coordpb::Role role() const;
  uint64_t epoch() const { return epoch_; }
  bool fenced() const { return fenced_by_coordinator_; }
  bool stopping() const { return stopping_; }
  coordpb::StoreInfo store() const;
  uint64_t store_id() const;
  uint64_t late_writes() const { return late_writes_; }

  // --- the checks (any thread) ---
  // OK iff the slot takes writes at `epoch` now (0: at its current epoch).
  // The refusal names the master's LMTP address (lmtp) or its API address.
  absl::Status CheckWrite(uint64_t epoch, bool lmtp = false) const;
  absl::Status CheckWriteAt(uint64_t epoch, bool lmtp, int64_t now_ns) const;
  // CheckWrite(0) as an LMTP reply: nullopt to let the write through.
  std::optional<lmtp::LmtpReply> LmtpGate() const;
  // Until when (BootNanos) the right to write holds: the coordinator's
  // answer to a heartbeat sent at s counts until s + lease; a replica's
  // vouch until the probe it answered + its vouch (0: never heard).
  int64_t HeldUntilNs() const;
  // OK iff the right to write still held at durable_ns (BootNanos, taken
  // right after the write became durable): a write acknowledged only then
  // cannot overlap a promoted master's. Otherwise kUnavailable (and counted
  // in late_writes).
  absl::Status HeldWhenDurable(int64_t durable_ns);
  // HeldWhenDurable as an LMTP reply: nullopt for the 250, else 451 4.3.0.
  std::optional<lmtp::LmtpReply> LmtpWhenDurable(int64_t durable_ns);
  // The sync server's vouch: for how long from now this slot, as a
  // replica, vouches for a master of master_epoch (zero or less: not).
  absl::Duration Vouch(uint64_t master_epoch) const;
  absl::Duration VouchAt(uint64_t master_epoch, int64_t now_ns) const;
  // The sync server's admission: OK iff this slot is a replica.
  absl::Status Admit() const;
  // For the client API's GetSlot.
  apipb::SlotState State() const;

 private:
  const uint64_t slot_id_;
  mutable Mutex mu_;
  coordpb::StoreInfo store_ ABSL_GUARDED_BY(mu_);
  coordpb::Role role_ ABSL_GUARDED_BY(mu_) = coordpb::ROLE_NONE;
  std::string master_lmtp_ ABSL_GUARDED_BY(mu_);
  std::string master_api_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> epoch_{0};
  std::atomic<uint64_t> newer_epoch_{0};  // a replica told us of it
  std::atomic<int64_t> lease_ns_{0};
  std::atomic<int64_t> vouch_grace_ns_{0};
  // BootNanos; 0: never.
  std::atomic<int64_t> coordinator_heard_ns_{0};      // send time of the last answered heartbeat
  std::atomic<int64_t> replica_vouched_until_ns_{0};  // the best replica vouch
  std::atomic<uint64_t> late_writes_{0};  // durable after the right to write ended
  std::atomic<bool> fenced_by_coordinator_{false};
  // Written on the io thread (Stop), read by the LMTP and API workers.
  std::atomic<bool> stopping_{false};
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_WRITE_GATE_H_
