// A slot: one copy of one store on one host (identity file, change log,
// index, spool). The Slot is the storage engine's front door: every mutation
// becomes a change-log record that is fsync'd before the call returns.
// Concurrent appends share fsyncs (group commit): the first waiting writer
// becomes the leader, writes everyone's records with one write() and one
// fdatasync(), and wakes the others. The slot's applier thread then applies
// the batch to the index, while the next batch is written: the index lock is
// handed from the leader to the applier, so every read through this Slot
// (GetMailbox, ListMessages, ...) waits for the batches already
// acknowledged and sees its own writes. Readers through another SQLite
// connection see them once WaitApplied() has returned.
//
// Thread-safe: every public method may be called from any thread, except an
// io thread (common/io_thread.h): nearly every method can wait for a lock a
// batch holds, an fsync or a file read, and checks that it is not on one.
//
// Example:
//   RETURN_IF_ERROR(Slot::Init(SlotPaths::Under("/srv/slot1"), identity));
//   ASSIGN_OR_RETURN(auto slot, Slot::Open(SlotPaths::Under("/srv/slot1"), {}));
//   RETURN_IF_ERROR(slot->CreateMailbox("user/alice").status());
//   ASSIGN_OR_RETURN(auto r, slot->Append({.mailbox = "user/alice", .body = msg}));
#ifndef MAILREPL_STORE_SLOT_H_
#define MAILREPL_STORE_SLOT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/handoff_mutex.h"
#include "common/io_thread.h"
#include "common/mutex.h"
#include "store/body_writer.h"
#include "store/identity.h"
#include "store/index.h"
#include "store/log_reader.h"
#include "store/log_writer.h"
#include "store/spool.h"
#include "store/types.h"

namespace mailrepl {

// Where a slot's parts live. Meta (the index) and spool (bodies) may be on
// other file systems than the root, as Cyrus's metapartition allows.
struct SlotPaths {
  std::string root;   // identity file and log/
  std::string meta;   // index.sqlite3
  std::string spool;  // message bodies

  static SlotPaths Under(const std::string& root) {
    return {root, root + "/meta", root + "/spool"};
  }
  std::string identity_file() const { return root + "/identity"; }
  std::string log_dir() const { return root + "/log"; }
  std::string index_file() const { return meta + "/index.sqlite3"; }
  std::string base_snapshot() const { return root + "/log/BASE.snapshot"; }
  // A snapshot received from the master, while it is being installed.
  std::string incoming_snapshot() const { return meta + "/incoming.snapshot"; }
  std::string lock_file() const { return root + "/LOCK"; }
};

struct SlotOptions {
  // When set, Open() fails unless the identity file says exactly this
  // cluster and store (and slot, when slot_id != 0).
  std::optional<SlotIdentity> expect;
  // Open() deletes the index files once it holds the slot's lock (and
  // rebuilds the index from the log): `mailctl reconstruct`. Never while
  // another process has the slot open.
  bool discard_index = false;
  // Must stay well below kMaxRecordPayload (the body travels in a record).
  uint64_t max_message_bytes = 50ull << 20;
  uint64_t segment_bytes = kDefaultSegmentBytes;
  // Log bytes between spool checkpoints (syncfs of the spool).
  uint64_t checkpoint_bytes = 64ull << 20;
  // Appends stop (kResourceExhausted, "No space left on device") while the
  // log's or the spool's file system has less free space than this, so that
  // the slot can always be reopened and recovered.
  uint64_t reserve_bytes = 16ull << 20;
  // If set, called by the applier thread after each group commit is
  // durable and in the index (outside the slot's locks), with the last LSN
  // committed: an in-process sync client wakes on it instead of waiting
  // for inotify. Must be cheap and thread-safe (replicad posts to its
  // io_context).
  std::function<void(uint64_t last_lsn)> on_commit;
  // If set, called by each group commit's leader as soon as the batch is
  // durable in the log, before its writers are told OK and before the
  // index has it, with the batch's last LSN; calls come in LSN order. A
  // replication sender may ship records up to that LSN at once (they are
  // in the log files). Runs with the slot's lock held: must be cheap and
  // must not call back into the slot (replicad posts to its io_context).
  std::function<void(uint64_t last_lsn)> on_durable;
};

// What Open() found and did.
struct RecoveryReport {
  std::optional<TornTail> torn_tail;  // truncated at open
  uint64_t records_replayed = 0;      // applied to the index at open
  uint64_t bodies_restored = 0;       // written back to the spool from the log
  std::optional<PackTornTail> pack_torn_tail;  // cut off the last spool pack
  uint64_t bodies_located = 0;        // found by a spool scan for a new index
  uint64_t last_lsn = 0;
};

enum class FlagOp { kReplace, kAdd, kRemove };

// Counters since the slot was opened.
struct SlotStats {
  uint64_t commits = 0;  // group commits: one write + one fdatasync each
  uint64_t records = 0;  // records made durable
  uint64_t bytes = 0;    // encoded record bytes made durable
  // Where the group commits' time went, summed over all commits: the log
  // write, its fdatasync, and applying the records to the index.
  absl::Duration write_time, sync_time, apply_time;
};

// The condition of a conditional append (salvage's exactly-once rule):
// append only if the mailbox holds fewer than `count` messages, not
// expunged, with the body's GUID and a UID above `above_uid`.
struct UnlessPresent {
  uint32_t above_uid = 0;
  uint32_t count = 1;  // at least 1
};

struct AppendRequest {
  std::string mailbox;  // name, e.g. "user/alice"
  std::string body;     // the exact message bytes
  std::vector<std::string> flags;
  int64_t internal_date = 0;  // seconds since the epoch; 0: now
  // Set: checked atomically with the append (it runs as an exclusive
  // operation, so no other append to the slot comes between); if the
  // message is there already, nothing is appended.
  std::optional<UnlessPresent> unless_present;
};

struct AppendResult {
  uint32_t uid = 0;
  uint32_t uidvalidity = 0;
  std::string guid;  // 20 raw bytes
  uint64_t lsn = 0;  // 0 when already_present
  // unless_present found the message there already: nothing was appended,
  // and uid is the matching message's (the count-th such by UID).
  bool already_present = false;
  uint64_t epoch = 0;  // the epoch its record carries (0 when already_present)
};

class Slot {
 public:
  // Creates a new, empty slot. Refuses if paths.root already holds a slot.
  static absl::Status Init(const SlotPaths& paths, const SlotIdentity& identity);
  // Opens a slot, recovering from a crash: truncates a torn log tail, replays
  // records the index lacks, restores bodies not yet checkpointed. Refuses
  // (kUnavailable) a slot another process has open. Refuses
  // with kDataLoss naming file and offset when the log is damaged elsewhere.
  static absl::StatusOr<std::unique_ptr<Slot>> Open(const SlotPaths& paths,
                                                    const SlotOptions& options);
  ~Slot();
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

  // --- mutations: each returns once its record is durable ---
  absl::StatusOr<MailboxInfo> CreateMailbox(const std::string& name);
  // Renames the mailbox and every mailbox below it.
  absl::Status RenameMailbox(const std::string& from, const std::string& to);
  // Refuses a mailbox that has children.
  absl::Status DeleteMailbox(const std::string& name);
  // kOutOfRange: over max_message_bytes; kResourceExhausted: over quota or
  // disk full; kNotFound: no such mailbox. With request.unless_present, an
  // exclusive operation (rare: salvage), which may append nothing
  // (AppendResult::already_present).
  absl::StatusOr<AppendResult> Append(const AppendRequest& request);
  // Copies messages (sharing their bodies); returns the new UIDs in order.
  absl::StatusOr<std::vector<uint32_t>> Copy(const std::string& from,
                                             const std::vector<uint32_t>& uids,
                                             const std::string& to);
  absl::Status SetFlags(const std::string& mailbox, const std::vector<uint32_t>& uids, FlagOp op,
                        const std::vector<std::string>& flags);
  absl::Status Expunge(const std::string& mailbox, const std::vector<uint32_t>& uids);
  absl::Status SetQuota(const std::string& user, uint64_t storage_limit, uint64_t message_limit);
  // Starts a new epoch of mastership; epoch must be above the current one.
  absl::Status BeginEpoch(uint64_t epoch);
  // Records an admin operation in the log (a local record).
  absl::Status AdminNote(const std::string& operation, const std::string& detail);

  // --- replication (replica side) ---
  // Appends records received from the master with their LSNs and epochs:
  // durable, then applied. The first must carry LSN last_lsn() + 1 and the
  // rest follow without gaps; local record types and epochs older than the
  // slot's are refused (kFailedPrecondition) and nothing is written. A
  // record that does not apply quarantines its mailbox; the others go on.
  absl::Status AppendReplicated(const std::vector<LogRecord>& records);
  // Replaces one mailbox's state with the master's (state-based resync), as
  // a local record. Bodies the spool lacks must be in `bodies` (GUID ->
  // bytes). Lifts the mailbox's quarantine.
  absl::Status RepairMailbox(const std::string& repair_payload,
                             const std::vector<std::string>& bodies);
  // Mailboxes whose records stopped applying (replicas).
  std::vector<Quarantine> Quarantined();
  // The newest epoch this slot has heard of (persisted).
  uint64_t seen_epoch();
  absl::Status NoteEpochSeen(uint64_t epoch);

  // --- reads (the applied state) ---
  std::vector<MailboxInfo> ListMailboxes();
  absl::StatusOr<MailboxInfo> GetMailbox(const std::string& name);
  absl::StatusOr<std::vector<MessageInfo>> ListMessages(const std::string& mailbox,
                                                        bool include_expunged);
  absl::StatusOr<std::string> FetchBody(const std::string& mailbox, uint32_t uid);
  QuotaInfo Quota(const std::string& user);
  Digest SlotDigest();
  uint64_t last_lsn();
  uint64_t epoch();
  std::vector<EpochStart> EpochHistory();
  uint64_t log_start_lsn();
  const SlotIdentity& identity() const { return identity_; }
  const SlotPaths& paths() const { return paths_; }
  const RecoveryReport& recovery() const { return recovery_; }
  SlotStats stats();

  // --- maintenance ---
  // Waits until every body of an applied record is in a spool pack and
  // located (not necessarily synced); tools that read the spool call it.
  absl::Status FlushBodies();
  // Makes the spool durable up to the applied LSN (fdatasync of the packs), so that log
  // records up to it are no longer needed to restore bodies.
  absl::Status Checkpoint();
  // Log retention: writes the base snapshot (state at the applied LSN, no
  // bodies) and removes log segments whose records are all below lsn.
  // Returns the number of segments removed.
  absl::StatusOr<int> DropLogBelow(uint64_t lsn);
  // Writes the consistent state at the applied LSN, bodies included, to path.
  absl::Status ExportSnapshot(const std::string& path);
  // Loads a snapshot into this slot, which must be empty (no records, no
  // mailboxes) unless replace is set: then the slot's index and log are
  // discarded first (its spool is kept: bodies are reused by GUID). The
  // snapshot becomes the slot's base and the log continues at the
  // snapshot's LSN + 1. kDataLoss if the file is damaged.
  absl::Status ImportSnapshot(const std::string& path, bool replace = false);
  // Rewinds the slot to empty (salvage, docs/operations.md "Rejoin and
  // salvage"): its index and log are discarded, its spool is kept (bodies
  // are reused by GUID), and the newest epoch it has seen is kept, so it
  // still refuses older masters. Afterwards last_lsn() is 0 and its master
  // sends it a snapshot. REQUIRES: whatever must survive was set aside
  // first (store/salvage_file.h). Safe against a crash at any point: the
  // index is cleared before the log goes, so a slot reopened midway either
  // still holds its whole log (and rebuilds the same state) or is empty.
  absl::Status DiscardState();
  // A body by GUID, checked against its SHA-1 (tools and replication).
  absl::StatusOr<std::string> ReadBlob(const std::string& guid);
  // Stores bodies that no log record carries (replication: a resync's or a
  // snapshot's bodies) in the spool, synced, and records their locations.
  absl::Status StoreBodies(const std::vector<std::string>& bodies);
  absl::StatusOr<bool> HasBlob(const std::string& guid);
  // Returns once every acknowledged write is in the index's database, for
  // readers that open the index file themselves (verify, tests).
  void WaitApplied() {
    CheckMayBlock("Slot::WaitApplied");
    HandoffLock l(index_mu_);
  }

  // Runs fn with the index locked (tools: verify, digest listings).
  template <typename Fn>
  auto WithIndex(Fn&& fn) {
    CheckMayBlock("Slot::WithIndex");
    HandoffLock l(index_mu_);
    return fn(*index_, spool_);
  }

 private:
  struct Writer;
  struct MailboxState {
    std::string id;
    std::string name;
    uint32_t uidvalidity = 0;
    uint32_t last_uid = 0;
    uint64_t highest_modseq = 0;
  };
  struct Usage {
    uint64_t bytes = 0;
    uint64_t messages = 0;
  };

  Slot(SlotPaths paths, SlotOptions options);
  absl::Status Recover();
  // Reloads the assigned state from the index.
  void LoadAssignedStateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_, index_mu_);
  // Waits until no write is in flight and keeps new appends out until
  // EndExclusiveLocked() (on error, it has been called already).
  absl::Status BeginExclusiveLocked(MutexLock& lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndExclusiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // EndExclusiveLocked() at the end of the scope. Declared after the
  // MutexLock of mu_, so it runs while that still holds mu_.
  auto EndExclusiveAtExit();
  absl::Status WritableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a record with the next LSN to w.
  void AddRecordLocked(Writer& w, RecordType type, const std::string& payload)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues w and returns when its records are durable (or failed); the
  // applier applies them to the index after, holding index_mu_ from before
  // the return until they are applied.
  absl::Status CommitLocked(Writer& w, MutexLock& lock) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<MailboxState*> FindByNameLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Append()'s assignment and commit, under mu_, after its checks outside
  // the lock; `known`: the slot has the body already.
  absl::StatusOr<AppendResult> AppendLocked(const AppendRequest& req, const std::string& guid,
                                            bool known, MutexLock& lock)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Append() with req.unless_present: the check, then the append, as one
  // exclusive operation.
  absl::StatusOr<AppendResult> AppendUnlessPresent(const AppendRequest& req);
  absl::Status CheckQuotaLocked(const std::string& user, uint64_t bytes, uint64_t messages)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewMailboxId();
  void MaintenanceLoop();
  // The applier thread: applies acknowledged batches to the index, in LSN
  // order, each with index_mu_ that its leader locked for it.
  void ApplyLoop();
  // HasBlob() without waiting for the applier: may say false for a body
  // that only the index knows (then the append carries it again).
  absl::StatusOr<bool> HasBlobNoWait(const std::string& guid);
  // Appends one body to the spool and records its location (not synced).
  absl::Status StoreBody(const std::string& guid, absl::string_view body);
  // kResourceExhausted when writing `need` bytes would eat into the reserve.
  absl::Status CheckFreeSpace(uint64_t need);
  // Clears the index (keeping the seen epoch) and removes the log and the
  // base snapshot; log_ is reset. The spool must be synced first.
  absl::Status DiscardLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_, index_mu_);

  const SlotPaths paths_;
  const SlotOptions options_;
  SlotIdentity identity_;
  int lock_fd_ = -1;  // flock held while open: one process per slot
  Spool spool_;
  std::unique_ptr<BodyWriter> bodies_;  // after spool_: destroyed (drained) before it
  RecoveryReport recovery_;

  Mutex mu_;
  CondVar idle_cv_;
  std::deque<Writer*> queue_ ABSL_GUARDED_BY(mu_);
  // Appends between validation and return (group commit gathers them).
  std::atomic<int> appends_active_{0};
  bool leader_gathering_ ABSL_GUARDED_BY(mu_) = false;
  int exclusive_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status failed_ ABSL_GUARDED_BY(mu_);
  uint64_t next_lsn_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t last_uidvalidity_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, MailboxState> mailboxes_ ABSL_GUARDED_BY(mu_);  // by id
  absl::flat_hash_map<std::string, std::string> names_ ABSL_GUARDED_BY(mu_);  // name -> id
  absl::flat_hash_map<std::string, Usage> usage_ ABSL_GUARDED_BY(mu_);        // by user
  absl::flat_hash_map<std::string, Usage> limits_ ABSL_GUARDED_BY(mu_);       // by user
  // Set after replicated records: the assigned state must be reloaded from
  // the index before a local write validates against it.
  bool assigned_stale_ ABSL_GUARDED_BY(mu_) = false;
  SlotStats stats_ ABSL_GUARDED_BY(mu_);

  // Batches durable and acknowledged, not yet in the index.
  struct ApplyJob {
    std::vector<LogRecord> records;
    bool replicated = false;  // misfits are quarantined, not fatal
    uint64_t bytes = 0;       // encoded size, for the spool checkpoint
  };
  // Guards the applier's queue and bookkeeping and the maintenance
  // thread's work. Held only briefly, never while waiting for another lock:
  // the applier must not wait for mu_, whose holder may be waiting for
  // index_mu_ that a queued job holds.
  Mutex apply_mu_;
  CondVar apply_cv_;
  std::deque<ApplyJob> apply_queue_ ABSL_GUARDED_BY(apply_mu_);
  bool apply_closing_ ABSL_GUARDED_BY(apply_mu_) = false;
  std::thread applier_;
  absl::Status apply_failed_ ABSL_GUARDED_BY(apply_mu_);  // copied to failed_ by writers
  absl::Duration apply_time_ ABSL_GUARDED_BY(apply_mu_);
  uint64_t bytes_since_checkpoint_ ABSL_GUARDED_BY(apply_mu_) = 0;
  bool checkpoint_wanted_ ABSL_GUARDED_BY(apply_mu_) = false;
  uint64_t index_commits_ ABSL_GUARDED_BY(apply_mu_) = 0;  // since the last WAL checkpoint
  bool closing_ ABSL_GUARDED_BY(apply_mu_) = false;
  CondVar maintenance_cv_;
  std::thread maintenance_;  // runs spool and WAL checkpoints off the commit path

  // CheckFreeSpace's last statvfs of the log's [0] and the spool's [1] file
  // systems, and the bytes appends have been granted since.
  struct FreeSpaceReading {
    absl::Time at = absl::InfinitePast();
    uint64_t free_bytes = 0;
    uint64_t granted = 0;
  };
  Mutex space_mu_;
  FreeSpaceReading space_[2] ABSL_GUARDED_BY(space_mu_);

  // The leader of a group commit owns the writer; nobody else touches it
  // (exclusive operations, with no commit in flight, replace it). Guarded
  // by that protocol, not by a lock the analysis could check.
  std::optional<LogWriter> log_;

  // Lock order: mu_ before index_mu_. Locked by a commit leader and
  // unlocked by the applier (HandoffMutex).
  HandoffMutex index_mu_;
  std::unique_ptr<Index> index_ ABSL_GUARDED_BY(index_mu_) ABSL_PT_GUARDED_BY(index_mu_);
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_SLOT_H_
