// File: coordinator/coordinator.h
//
// The coordinator's state machine: the authority on topology (hosts, slots,
// stores, masters, epochs), the user directory and the master leases, kept
// in the SQLite database of coordinator/schema.h. One method per
// coordpb request; each runs in ONE SQLite transaction, so a request either
// happens completely or not at all (bad input changes nothing). Every
// topology change bumps the topology version, every directory change the
// directory version, and each appends an event. Waiting (the heartbeat long
// poll) is not done here: see CoordinatorService.
//
// Thread-compatible: one thread at a time (coordinatord calls it from its
// io thread). One Coordinator per database file: Open() takes an exclusive
// flock on the file, so a second coordinatord on the same file is refused.
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> c,
//                    Coordinator::Open(path, {.lease_ms = 6000}));
//   ASSIGN_OR_RETURN(coordpb::CreateStoreReply r, c->CreateStore(request));
#ifndef MAILREPL_COORDINATOR_COORDINATOR_H_
#define MAILREPL_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sqlite.h"
#include "proto/coord.pb.h"

namespace mailrepl::coord {

// Replicas further behind than this (records or seconds) make a store
// "lagging" in GetStatus.
inline constexpr uint64_t kLaggingRecords = 1000;
inline constexpr double kLaggingSeconds = 5.0;
// User names: at most this many bytes.
inline constexpr size_t kMaxUserNameBytes = 64;
// GetHistory without a limit returns this many events; no more than
// kMaxHistoryLimit in any case.
inline constexpr uint32_t kDefaultHistoryLimit = 1000;
inline constexpr uint32_t kMaxHistoryLimit = 100000;
// The results RecordCheck accepts.
inline constexpr const char* kCheckResults[] = {"consistent", "differs", "repaired",
                                                "unchecked"};

inline constexpr uint32_t kDefaultVouchGraceMs = 30000;

struct CoordinatorOptions {
  // Used only when the database is created; if set and the database
  // belongs to another cluster, Open() fails (kFailedPrecondition).
  std::string cluster_id;
  // The master lease period. 0: keep the database's. A different value is
  // written to the database (a topology change: hosts receive it).
  uint32_t lease_ms = 0;
  // The clock of every decision: leases, host liveness, report times,
  // failover and promotion waits. Monotonic milliseconds (their origin
  // means nothing); tests pass a fake clock. Default: BootMillis()
  // (common/clock.h), which no wall-clock step moves.
  std::function<int64_t()> now_ms;
  // Unix milliseconds, only for what is recorded or shown: event and check
  // times, and the times GetStatus reports (converted from now_ms at the
  // moment of answering). Default: the wall clock.
  std::function<int64_t()> wall_ms;
  // Sent to hosts with their assignments (Assignments.vouch_grace_ms): how
  // long a replica vouches for its master past its own coordinator
  // contact. Not stored: each coordinatord start sets it.
  uint32_t vouch_grace_ms = kDefaultVouchGraceMs;
};

// The two versions a heartbeat compares.
struct Versions {
  uint64_t topology = 0;
  uint64_t directory = 0;
  bool operator==(const Versions&) const = default;
};

// A slot's last report (Heartbeat.slots) and when it arrived.
struct SlotReport {
  coordpb::SlotStatus status;
  int64_t arrived_ms = 0;  // now_ms() when it arrived (slots.status_ms)
  // Heartbeats recorded by this Coordinator are numbered 1, 2, ...; this is
  // the number of the one that carried the report (0: it arrived before
  // the database was opened). Orders reports exactly, unlike arrived_ms.
  uint64_t sequence = 0;
};

// A planned failover that began (BeginFailover): the store is fenced.
struct FailoverPlan {
  uint64_t store_id = 0;
  uint64_t epoch = 0;          // the store's epoch before the switch
  uint64_t from_slot_id = 0;   // the master
  std::string from_host;
  uint64_t to_slot_id = 0;     // the target replica
  std::string to_host;
  std::string reason;
  int64_t began_ms = 0;
  uint64_t began_sequence = 0;  // reports with a larger sequence came after the begin
};

// A forced promotion that began (BeginPromotion): the store is fenced and
// at the new epoch, its master unchanged.
struct PromotionPlan {
  uint64_t store_id = 0;
  uint64_t epoch = 0;            // the new epoch, E + 1 (the store's now)
  uint64_t from_slot_id = 0;     // the old master
  std::string from_host;
  bool from_reported = false;    // the old master has a last report
  uint64_t from_last_lsn = 0;    // its last reported last_lsn (0: never reported)
  int64_t from_report_age_ms = 0;  // began_ms - when that report arrived
  std::string reason;
  int64_t began_ms = 0;          // now_ms()
  uint64_t began_sequence = 0;   // heartbeats numbered higher came after the begin
  int64_t lease_expires_ms = 0;  // the old master's lease (leases table, now_ms) at the begin
  uint64_t topology_version = 0;  // the version that carries the new epoch
  std::vector<std::string> replica_hosts;  // hosts of the store's other slots
};

// A forced promotion's switch (PromoteMaster).
struct Promotion {
  coordpb::StoreInfo store;      // after the switch
  uint64_t to_slot_id = 0;
  std::string to_host;
  uint64_t to_last_lsn = 0;      // the target's own last report
  // What the old master may have written that the target lacks: every LSN
  // from lost_from_lsn (to_last_lsn + 1) on. lost_to_lsn is the old
  // master's last reported LSN if that is >= lost_from_lsn (these at least;
  // it may have written more after that report), else 0: how many is
  // unknown (coordpb.PromoteReply).
  uint64_t lost_from_lsn = 0;
  uint64_t lost_to_lsn = 0;
};

class Coordinator {
 public:
  // Opens or creates the database (coordinator/schema.h) and takes an
  // exclusive lock on it. Errors name the file and say what to do.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Open(const std::string& path,
                                                           CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // --- one method per coordpb request ---

  // Upserts the host and its slots (a slot id owned by another host is
  // refused, naming both hosts), counts as a heartbeat (renews the leases of
  // the stores whose master is on the host). The reply is complete.
  absl::StatusOr<coordpb::RegisterHostReply> RegisterHost(const coordpb::RegisterHost& request);
  // Records the host's heartbeat and slot statuses, renews its masters'
  // leases, and answers against the known versions (never waits).
  // kNotFound if the host never registered.
  absl::StatusOr<coordpb::HeartbeatReply> Heartbeat(const coordpb::Heartbeat& request);
  absl::StatusOr<coordpb::LookupUserReply> LookupUser(const coordpb::LookupUser& request);
  // The store of `user` ("user", "user+ext" or "user@domain", normalized
  // as NormalizeUser does) as it is now (master, epoch, fenced, service
  // addresses, members), or nullopt for a user in no store.
  // kInvalidArgument: not a valid user name (ValidateUser); other errors
  // come from the database (kUnavailable, kInternal): retry later.
  absl::StatusOr<std::optional<coordpb::StoreInfo>> UserStore(absl::string_view user);
  absl::StatusOr<coordpb::CreateStoreReply> CreateStore(const coordpb::CreateStore& request);
  absl::StatusOr<coordpb::AssignUsersReply> AssignUsers(const coordpb::AssignUsers& request);
  absl::StatusOr<coordpb::SetDurabilityReply> SetDurability(
      const coordpb::SetDurability& request);
  // Sets or clears (empty) a store's service addresses: valid ADDR:PORT,
  // used by no other store (kAlreadyExists naming it). Bumps the topology.
  absl::StatusOr<coordpb::SetServiceAddressReply> SetServiceAddress(
      const coordpb::SetServiceAddress& request);
  // Topology removals (coord.proto says when each is refused); each bumps
  // the topology and appends an event.
  absl::StatusOr<coordpb::RemoveStoreReply> RemoveStore(const coordpb::RemoveStore& request);
  absl::StatusOr<coordpb::RemoveSlotReply> RemoveSlot(const coordpb::RemoveSlot& request);
  absl::StatusOr<coordpb::RemoveHostReply> RemoveHost(const coordpb::RemoveHost& request);
  absl::StatusOr<coordpb::GetStatusReply> GetStatus(const coordpb::GetStatus& request);
  absl::StatusOr<coordpb::GetHistoryReply> GetHistory(const coordpb::GetHistory& request);
  // Records the outcome of a consistency check of one store (`replctl
  // check`), replacing the store's previous one (GetStatus shows it as
  // StoreStatus.last_check), and appends a "check" event. Not a topology or
  // directory change: no version moves, so no heartbeat wakes.
  // kInvalidArgument: the result is not one of kCheckResults (nothing
  // recorded); kNotFound: no such store.
  absl::StatusOr<coordpb::RecordCheckReply> RecordCheck(const coordpb::RecordCheck& request);
  // Records a finished salvage (an old master's messages past the fork
  // point appended to the master again): appends a "salvage" event, unless
  // one for the same store, slot and LSN range is already there (reply
  // recorded = false). No version moves. kNotFound: no such store;
  // kInvalidArgument: no slot or an empty LSN range.
  absl::StatusOr<coordpb::RecordSalvageReply> RecordSalvage(
      const coordpb::RecordSalvage& request);

  // --- planned failover (driven by coordinator/failover.h; each one
  // transaction) ---

  // Fences the store and picks the target: request.to_slot_id (a member
  // other than the master, else kInvalidArgument) or the replica with the
  // highest acked_lsn in the master's last report (ties: the lowest slot
  // id). kNotFound: no such store; kFailedPrecondition: a failover of the
  // store is in progress; kUnavailable: the target's host is not alive.
  // Appends "failover_begin" and bumps the topology.
  absl::StatusOr<FailoverPlan> BeginFailover(const coordpb::Failover& request);
  // Makes the target the master at epoch + 1, unfenced, with the lease;
  // appends "failover" (at `lsn`) and bumps the topology. Returns the store.
  absl::StatusOr<coordpb::StoreInfo> SwitchMaster(const FailoverPlan& plan, uint64_t lsn);
  // Unfences the store and changes nothing else; appends
  // "failover_aborted" with `why` and bumps the topology.
  absl::Status AbortFailover(const FailoverPlan& plan, absl::string_view why);

  // --- forced promotion (driven by coordinator/promote.h; each one
  // transaction) ---

  // Refuses (changing nothing) an unknown store (kNotFound), a store in a
  // failover or promotion (kFailedPrecondition), a master whose host is
  // alive (kFailedPrecondition: use failover) and a store none of whose
  // replicas has a live host (kUnavailable). Otherwise fences the store and
  // raises its epoch to E + 1, master unchanged; appends "promote_begin"
  // and bumps the topology.
  absl::StatusOr<PromotionPlan> BeginPromotion(const coordpb::Promote& request);
  // When the host of store_id's master stops counting as alive (now_ms()
  // clock) unless it sends another heartbeat; nullopt if it is not alive.
  absl::StatusOr<std::optional<int64_t>> MasterHostAliveUntil(uint64_t store_id);
  // Picks the replica with a live host and the highest last_lsn in its own
  // latest report (ties: the lowest slot id; slots reporting an error or
  // never reporting are skipped) and makes it the master at plan.epoch,
  // unfenced, with the lease; appends "promote" with the range that may be
  // lost and bumps the topology. kUnavailable (nothing changed) when no
  // replica qualifies; kFailedPrecondition if the store changed meanwhile.
  absl::StatusOr<Promotion> PromoteMaster(const PromotionPlan& plan);
  // Unfences the store, keeping the master and the new epoch; appends
  // "promote_aborted" with `why` and bumps the topology.
  absl::Status AbortPromotion(const PromotionPlan& plan, absl::string_view why);
  // True if a RegisterHost or Heartbeat from `host` was recorded after
  // heartbeat number `sequence` (see SlotReport::sequence).
  bool HostHeardAfter(const std::string& host, uint64_t sequence) const;
  // Since when (now_ms) `host` says in its heartbeats that it holds
  // topology version `version` or a later one (it applied it before that
  // heartbeat was sent); nullopt if its last heartbeat named an older one.
  std::optional<int64_t> HoldsSince(const std::string& host, uint64_t version) const;
  uint32_t vouch_grace_ms() const { return options_.vouch_grace_ms; }

  // The slot's last report, or nullopt if it never reported.
  absl::StatusOr<std::optional<SlotReport>> LastReport(uint64_t slot_id);
  // The number of the last heartbeat recorded (see SlotReport::sequence).
  uint64_t report_sequence() const { return report_sequence_; }

  // The reply a heartbeat of `host` gets for the known versions, without
  // recording anything (the long poll's answer after it waited).
  absl::StatusOr<coordpb::HeartbeatReply> HeartbeatAnswer(const std::string& host,
                                                          uint64_t known_version,
                                                          uint64_t known_directory_version);

  // The committed versions (cached; only this object writes the database).
  Versions versions() const { return versions_; }
  const std::string& cluster_id() const { return cluster_id_; }
  uint32_t lease_ms() const { return lease_ms_; }
  const std::string& path() const { return db_->path(); }
  // The decision clock (CoordinatorOptions::now_ms; fake in tests).
  int64_t now_ms() const { return options_.now_ms(); }
  // The wall clock (CoordinatorOptions::wall_ms), Unix ms.
  int64_t wall_ms() const { return options_.wall_ms(); }

  // Called after every commit that changed a version (on the calling
  // thread, after the transaction ended).
  void SetChangeListener(std::function<void()> listener) { listener_ = std::move(listener); }
  // Called after every heartbeat or RegisterHost that was recorded (on the
  // calling thread).
  void SetReportListener(std::function<void()> listener) {
    report_listener_ = std::move(listener);
  }

 private:
  absl::Status CheckServiceAddresses(uint64_t store_id, const std::string& lmtp,
                                     const std::string& api);
  struct Txn;  // the state of one transaction (coordinator.cc)

  Coordinator(int lock_fd, std::unique_ptr<sqlite::Database> db, CoordinatorOptions options);
  absl::Status Load();
  // Runs body in one transaction (BEGIN IMMEDIATE when write); commits if
  // it succeeded, rolls back otherwise; then publishes new versions.
  absl::Status InTransaction(bool write, const std::function<absl::Status(Txn&)>& body);
  int64_t Now() const { return options_.now_ms(); }
  int64_t WallNow() const { return options_.wall_ms(); }

  // Helpers used inside a transaction.
  absl::Status AppendEvent(Txn& txn, uint64_t store_id, absl::string_view kind,
                           absl::string_view detail);
  absl::Status BumpTopology(Txn& txn);
  // kNotFound naming the store if there is no such store.
  absl::Status StoreExists(uint64_t store_id);
  absl::Status BumpDirectory(Txn& txn);
  absl::Status RenewLeases(Txn& txn, const std::string& host);
  // The store's lease goes to slot_id, valid for lease_ms from now.
  absl::Status GrantLease(Txn& txn, uint64_t store_id, uint64_t slot_id);
  // Clears the store's fenced flag (a failover or promotion ended).
  absl::Status Unfence(Txn& txn, uint64_t store_id);
  absl::Status SetLeaseMs(uint32_t lease_ms);
  // At Open: caps the persisted now_ms() values (lease expiries, last
  // heartbeats, report times), which are meaningless if the machine
  // rebooted since they were written, so none lies in the future.
  absl::Status ClampPersistedTimes();
  // At Open: a store left fenced by a coordinatord that stopped during a
  // failover or a promotion is unfenced ("failover_aborted"), as none runs
  // now; a promotion's new epoch is kept.
  absl::Status AbortInterruptedFailovers();
  // The host's last heartbeat (now_ms(); 0: never, or no such host).
  absl::StatusOr<int64_t> LastHeartbeatMs(const std::string& host);
  // Heard from within the lease period.
  absl::StatusOr<bool> HostAlive(const std::string& host);
  // The first now_ms() at which host no longer counts as alive, nullopt if
  // it does not now.
  absl::StatusOr<std::optional<int64_t>> HostAliveUntil(const std::string& host);
  absl::StatusOr<bool> HostExists(const std::string& host);
  absl::StatusOr<coordpb::SlotInfo> LoadSlot(uint64_t slot_id, bool* found);
  absl::StatusOr<coordpb::StoreInfo> LoadStore(uint64_t store_id, bool* found);
  // The store, unless it is unknown (kNotFound) or a failover or promotion
  // of it is in progress (kFailedPrecondition).
  absl::StatusOr<coordpb::StoreInfo> LoadIdleStore(uint64_t store_id);
  absl::Status FillAssignments(Txn& txn, const std::string& host, bool include_slots,
                               bool include_users, coordpb::Assignments* out);

  int lock_fd_;  // flock'ed; closed after db_ (declared first)
  std::unique_ptr<sqlite::Database> db_;
  CoordinatorOptions options_;
  std::string cluster_id_;
  uint32_t lease_ms_ = 0;
  Versions versions_;
  std::function<void()> listener_;
  std::function<void()> report_listener_;
  uint64_t report_sequence_ = 0;
  std::map<uint64_t, uint64_t> report_sequence_by_slot_;
  std::map<std::string, uint64_t> report_sequence_by_host_;
  // What each host's last heartbeat said it holds (GetStatus shows it).
  std::map<std::string, Versions> known_by_host_;
  // When each host's heartbeats first named their current topology version.
  std::map<std::string, int64_t> topology_since_;
};

// Normalizes a LookupUser name ("Bob", "bob+lists", "Bob@example.com") to
// the lower-case local part before '+' ("bob"). Does not validate.
std::string NormalizeUser(absl::string_view user);

// OK, or kInvalidArgument saying what is wrong: a user name is 1..64
// lower-case letters, digits, '.', '_' and '-', starting with a letter or a
// digit.
absl::Status ValidateUser(absl::string_view user);

// The checks of a request's arguments that need no database, which the
// Coordinator's call for that operation makes first (RegisterHost,
// LookupUser, CreateStore, AssignUsers, SetDurability, RecordCheck,
// RecordSalvage): kInvalidArgument saying what is wrong, or OK (also for
// the other operations, whose checks need the database, and for none).
absl::Status CheckRequestArguments(const coordpb::Request& request);

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_COORDINATOR_H_
