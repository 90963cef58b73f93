#include "replicad/write_gate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/clock.h"

namespace mailrepl::replicad {

using lmtp::LmtpReply;

std::string RoleName(coordpb::Role role) {
  switch (role) {
    case coordpb::MASTER:
      return "master";
    case coordpb::REPLICA:
      return "replica";
    default:
      return "none";
  }
}

void WriteGate::SetLease(absl::Duration lease, absl::Duration vouch_grace) {
  lease_ns_ = absl::ToInt64Nanoseconds(lease);
  vouch_grace_ns_ = absl::ToInt64Nanoseconds(vouch_grace);
}

void WriteGate::SetStore(const coordpb::StoreInfo& store) {
  MutexLock lock(mu_);
  store_ = store;
  for (const coordpb::SlotInfo& m : store.members()) {
    if (m.slot_id() == store.master_slot_id()) {
      master_lmtp_ = m.lmtp_address();
      master_api_ = m.api_address();
    }
  }
}

coordpb::Role WriteGate::SetRole(coordpb::Role role) {
  MutexLock lock(mu_);
  const coordpb::Role before = role_;
  role_ = role;
  return before;
}

coordpb::Role WriteGate::role() const {
  MutexLock lock(mu_);
  return role_;
}

coordpb::StoreInfo WriteGate::store() const {
  MutexLock lock(mu_);
  return store_;
}

uint64_t WriteGate::store_id() const {
  MutexLock lock(mu_);
  return store_.store_id();
}

bool WriteGate::NoteNewerEpoch(uint64_t newer) {
  if (newer <= epoch_) return false;
  uint64_t known = newer_epoch_;
  while (known < newer && !newer_epoch_.compare_exchange_weak(known, newer)) {
  }
  return true;
}

void WriteGate::CoordinatorHeard(absl::Duration sent) {
  const int64_t ns = absl::ToInt64Nanoseconds(sent);
  int64_t known = coordinator_heard_ns_;
  while (known < ns && !coordinator_heard_ns_.compare_exchange_weak(known, ns)) {
  }
}

void WriteGate::ReplicaVouched(int64_t until_ns) {
  int64_t known = replica_vouched_until_ns_;
  while (known < until_ns && !replica_vouched_until_ns_.compare_exchange_weak(known, until_ns)) {
  }
}

int64_t WriteGate::HeldUntilNs() const {
  const int64_t heard = coordinator_heard_ns_;
  return std::max<int64_t>(heard == 0 ? 0 : heard + lease_ns_, replica_vouched_until_ns_);
}

absl::Duration WriteGate::Vouch(uint64_t master_epoch) const {
  return VouchAt(master_epoch, BootNanos());
}

absl::Duration WriteGate::VouchAt(uint64_t master_epoch, int64_t now_ns) const {
  if (role() != coordpb::REPLICA) return absl::ZeroDuration();
  // A master older than the store's epoch as this host knows it is not
  // vouched for (its sessions are refused anyway).
  if (master_epoch < epoch_) return absl::ZeroDuration();
  const int64_t heard = coordinator_heard_ns_;
  if (heard == 0) return absl::ZeroDuration();
  // Each vouch lasts at most a lease period, so one given before this host
  // learned of a newer epoch ends a lease period after it learned.
  return absl::Nanoseconds(
      std::min<int64_t>(lease_ns_, heard + lease_ns_ + vouch_grace_ns_ - now_ns));
}

absl::Status WriteGate::HeldWhenDurable(int64_t durable_ns) {
  // Not the coordinator's fence: a planned failover drains the writes its
  // fence found in flight, and they count (the switch waits for them).
  // Role and epoch change only through the coordinator after that drain,
  // or after a promotion, whose wait the lease check below covers.
  if (role() == coordpb::MASTER && newer_epoch_ <= epoch_ && durable_ns <= HeldUntilNs()) {
    return absl::OkStatus();
  }
  ++late_writes_;
  return absl::UnavailableError(absl::StrCat(
      "slot ", slot_id_,
      " lost its right to write before the write was durable (lease ran out, or a newer master "
      "exists); it is kept past the fork point and may be salvaged: retry, a duplicate is "
      "possible"));
}

std::optional<LmtpReply> WriteGate::LmtpWhenDurable(int64_t durable_ns) {
  absl::Status held = HeldWhenDurable(durable_ns);
  if (held.ok()) return std::nullopt;
  return LmtpReply{451, "4.3.0", std::string(held.message())};
}

absl::Status WriteGate::CheckWrite(uint64_t epoch, bool lmtp) const {
  return CheckWriteAt(epoch, lmtp, BootNanos());
}

absl::Status WriteGate::CheckWriteAt(uint64_t epoch, bool lmtp, int64_t now) const {
  std::string master;
  coordpb::Role role;
  uint64_t store_id;
  {
    MutexLock lock(mu_);
    role = role_;
    master = lmtp ? master_lmtp_ : master_api_;
    store_id = store_.store_id();
  }
  if (stopping_) return absl::UnavailableError("replicad is shutting down");
  if (role != coordpb::MASTER) {
    return absl::FailedPreconditionError(
        absl::StrCat("slot ", slot_id_, " is not the master of store ", store_id, " (",
                     RoleName(role), "); the master's ", lmtp ? "LMTP" : "API", " is at ", master));
  }
  if (epoch != 0 && epoch != epoch_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stale epoch ", epoch, ": store ", store_id, " is at epoch ", epoch_.load()));
  }
  if (fenced_by_coordinator_) {
    return absl::UnavailableError(
        absl::StrCat("store ", store_id, " is switching masters (fenced); retry shortly"));
  }
  if (newer_epoch_ > epoch_) {
    return absl::UnavailableError(absl::StrCat(
        "slot ", slot_id_, " is no longer master: a replica knows epoch ", newer_epoch_.load()));
  }
  if (coordinator_heard_ns_ == 0 && replica_vouched_until_ns_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "slot ", slot_id_,
        " is fenced until it hears from the coordinator or a replica vouches (it just started)"));
  }
  if (now > HeldUntilNs()) {
    const int64_t heard = coordinator_heard_ns_;
    return absl::UnavailableError(absl::StrCat(
        "slot ", slot_id_, " fenced itself: its lease ran out (no word from the ",
        heard == 0 ? std::string("coordinator since it started")
                   : absl::StrCat("coordinator for ",
                                  absl::FormatDuration(absl::Trunc(absl::Nanoseconds(now - heard),
                                                                   absl::Milliseconds(1)))),
        ", lease ", absl::FormatDuration(absl::Nanoseconds(lease_ns_.load())),
        ", and no replica vouches)"));
  }
  return absl::OkStatus();
}

std::optional<LmtpReply> WriteGate::LmtpGate() const {
  absl::Status s = CheckWrite(0, /*lmtp=*/true);
  if (s.ok()) return std::nullopt;
  return LmtpReply{451, "4.3.0", std::string(s.message())};
}

absl::Status WriteGate::Admit() const {
  const coordpb::Role r = role();
  if (r == coordpb::REPLICA) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("slot ", slot_id_, " is not a replica (", RoleName(r), ")"));
}

apipb::SlotState WriteGate::State() const {
  apipb::SlotState s;
  s.set_master(CheckWrite(0).ok());
  s.set_epoch(epoch_);
  MutexLock lock(mu_);
  s.set_master_api_address(master_api_);
  return s;
}

}  // namespace mailrepl::replicad
