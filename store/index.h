// The slot's index: mail state derived from the change log, kept in SQLite
// (META/index.sqlite3). It can always be rebuilt from the log (plus the base
// snapshot left by log retention) and the spool. Every record is applied in
// LSN order inside one transaction per batch, together with the index's
// applied LSN, so the index is always the state at exactly some LSN.
// Keeps every mailbox row in memory (O(mailboxes), never O(messages)) and
// the slot digest, updated incrementally.
// Thread-compatible: the Slot serializes all calls.
#ifndef MAILREPL_STORE_INDEX_H_
#define MAILREPL_STORE_INDEX_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sqlite.h"
#include "store/log_format.h"
#include "store/spool.h"
#include "store/types.h"

namespace mailrepl {

// A mailbox whose records stopped applying on a replica; a state-based
// resync (RepairMailbox record) lifts it.
struct Quarantine {
  std::string mailbox_id;
  std::string name;
  uint64_t lsn = 0;  // the record that did not apply
  std::string reason;
};

// The mailbox id a record refers to; empty for records about no mailbox.
std::string RecordMailboxId(const LogRecord& record);

class Index {
 public:
  // autocheckpoint=false: commits never copy the WAL back into the database
  // (SQLite's default does it, with two fsyncs, every 1000 pages); the
  // caller runs CheckpointWal() elsewhere (the slot: its maintenance thread).
  static absl::StatusOr<std::unique_ptr<Index>> Open(const std::string& path,
                                                     bool autocheckpoint = true);
  // A passive WAL checkpoint of the index file at path, on a connection of
  // its own (so the caller needs no lock on the Index writing it).
  static absl::Status CheckpointWal(const std::string& path);
  // A consistent read-only view of another process's index: one read
  // transaction held until the object is destroyed. With kPosition, only
  // the position (applied LSN and epoch, log start, epoch history,
  // quarantine) and the stored slot digest are read, which costs O(1)
  // rather than O(mailboxes); LoadState() reads the rest later, in the same
  // transaction. (An index written before the slot digest was stored is
  // read whole at once.)
  enum class ViewScope { kAll, kPosition };
  static absl::StatusOr<std::unique_ptr<Index>> OpenReadOnly(const std::string& path,
                                                             ViewScope scope = ViewScope::kAll);
  // Reads mailboxes and quotas into a kPosition view (no-op when loaded).
  absl::Status LoadState();
  // Whether mailboxes(), quotas and the rest are loaded (always, unless a
  // kPosition view).
  bool state_loaded() const { return state_loaded_; }

  // Applies records (already durable in the log, in log order: each
  // replicated record at applied_lsn() + 1, each local record at
  // applied_lsn()) in one transaction. A record that does not fit the state
  // (unknown mailbox, UID not above last UID, ...) fails the whole batch
  // with kFailedPrecondition naming the LSN, and nothing is applied; with
  // quarantine_misfits (replicas), it quarantines its mailbox instead, and
  // later records for a quarantined mailbox are skipped.
  absl::Status Apply(const std::vector<LogRecord>& records, bool quarantine_misfits = false);

  // Local records applied at applied_lsn() (recovery skips that many).
  uint64_t applied_local() const { return applied_local_; }
  const std::map<std::string, Quarantine>& quarantined() const { return quarantine_; }
  // The newest epoch this slot has heard of (a replica rejects older ones).
  uint64_t seen_epoch() const { return seen_epoch_; }
  absl::Status SetSeenEpoch(uint64_t epoch);

  // The slot digest kept in the meta table at every commit (the one a
  // kPosition view has); nullopt for an index written before it was kept.
  std::optional<Digest> stored_slot_digest() const { return stored_slot_digest_; }

  // Erases all state (reconstruct starts from here) except the locations of
  // bodies in the spool, which stay usable by GUID.
  absl::Status Clear();

  uint64_t applied_lsn() const { return applied_lsn_; }
  uint64_t applied_epoch() const { return applied_epoch_; }
  // Lowest LSN still present in the log (raised by log retention); records
  // below it are summarized by the base snapshot.
  uint64_t log_start_lsn() const { return log_start_lsn_; }
  absl::Status SetLogStart(uint64_t lsn);
  uint64_t spool_checkpoint_lsn() const { return spool_checkpoint_lsn_; }
  absl::Status SetSpoolCheckpoint(uint64_t lsn);

  const absl::flat_hash_map<std::string, MailboxInfo>& mailboxes() const { return mailboxes_; }
  const MailboxInfo* FindMailbox(const std::string& id) const;
  const MailboxInfo* FindMailboxByName(const std::string& name) const;
  Digest slot_digest() const { return slot_digest_; }
  const std::vector<EpochStart>& epoch_history() const { return epochs_; }

  absl::StatusOr<std::vector<MessageInfo>> ListMessages(const std::string& mailbox_id,
                                                        bool include_expunged);
  absl::StatusOr<std::optional<MessageInfo>> GetMessage(const std::string& mailbox_id,
                                                        uint32_t uid);
  // Whether the index lists the GUID in blobs: its body is in the spool, or
  // a record or snapshot without the body referred to it. A body carried by
  // a record is listed once it is in a pack (SetBlobLocation); until then
  // the slot's BodyWriter has it.
  absl::StatusOr<bool> HasBlob(const std::string& guid);
  // Where the body is in the spool; nullopt while it is not there yet (the
  // background writer has not stored it) or the GUID is unknown.
  absl::StatusOr<std::optional<BodyLocation>> BlobLocation(const std::string& guid);
  // Records where a body is in the spool (adds the blobs row if missing).
  absl::Status SetBlobLocation(const StoredBody& body);
  // The same for many, in one transaction of its own.
  absl::Status SetBlobLocations(const std::vector<StoredBody>& bodies);
  // Visits every blob (GUID, size, location) in GUID order; stops at the
  // first error.
  absl::Status ForEachBlob(
      const std::function<absl::Status(const std::string&, uint64_t,
                                       const std::optional<BodyLocation>&)>& fn);
  // Visits every message row of every mailbox.
  absl::Status ForEachMessage(
      const std::function<absl::Status(const std::string& mailbox_id, const MessageInfo&)>& fn);
  std::map<std::string, QuotaInfo> Quotas() const;
  // Users with a quota row (limits set, even to 0): what the digest covers.
  const std::map<std::string, QuotaInfo>& quota_limits() const { return quotas_; }
  QuotaInfo Quota(const std::string& user) const;

  // Used by snapshot import: inserts state directly, then SetState() once.
  absl::Status ImportMailbox(const MailboxInfo& mb);
  absl::Status ImportMessage(const std::string& mailbox_id, const MessageInfo& m);
  absl::Status ImportQuota(const std::string& user, uint64_t storage_limit,
                           uint64_t message_limit);
  absl::Status FinishImport(uint64_t lsn, uint64_t epoch, const std::vector<EpochStart>& epochs);

  absl::Status Begin();
  absl::Status Commit();
  absl::Status Rollback();

 private:
  Index() = default;
  absl::Status CreateSchema();
  // Reads everything (kAll) or only the position (kPosition; see
  // OpenReadOnly).
  absl::Status Load(ViewScope scope = ViewScope::kAll);
  absl::Status LoadMailboxesAndQuotas();
  // Writes slot_digest_ to the meta table (inside the caller's transaction).
  absl::Status StoreSlotDigest();
  absl::Status ApplyOne(const LogRecord& r);
  absl::Status ApplyRepair(const LogRecord& r);
  absl::Status QuarantineMailbox(const std::string& id, const LogRecord& r, absl::string_view why);
  // add_blob: also add the GUID's blobs row (without a location) if missing.
  absl::Status InsertMessage(const std::string& mailbox_id, const MessageInfo& m,
                             bool add_blob = true);
  absl::Status SaveMailbox(const MailboxInfo& mb);
  absl::Status SetMeta(const std::string& key, uint64_t value);
  void ReplaceMailboxDigest(const MailboxInfo* before, const MailboxInfo* after);

  std::unique_ptr<sqlite::Database> db_;
  uint64_t applied_lsn_ = 0;
  uint64_t applied_epoch_ = 0;
  uint64_t log_start_lsn_ = 1;
  uint64_t spool_checkpoint_lsn_ = 0;
  uint64_t applied_local_ = 0;
  uint64_t seen_epoch_ = 0;
  bool read_only_ = false;
  std::map<std::string, Quarantine> quarantine_;  // by mailbox id
  absl::flat_hash_map<std::string, MailboxInfo> mailboxes_;   // by id
  absl::flat_hash_map<std::string, std::string> by_name_;     // name -> id
  std::map<std::string, QuotaInfo> quotas_;                    // limits; usage computed
  std::vector<EpochStart> epochs_;
  Digest slot_digest_;
  std::optional<Digest> stored_slot_digest_;
  bool state_loaded_ = false;
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_INDEX_H_
