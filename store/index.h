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
#include "store/types.h"

namespace mailrepl {

class Index {
 public:
  static absl::StatusOr<std::unique_ptr<Index>> Open(const std::string& path);

  // Applies records (already durable in the log, LSNs contiguous and above
  // applied_lsn()) in one transaction. A record that does not fit the state
  // (unknown mailbox, UID not above last UID, ...) fails the whole batch
  // with kFailedPrecondition naming the LSN; nothing is applied then.
  absl::Status Apply(const std::vector<LogRecord>& records);

  // Erases all state (reconstruct starts from here).
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
  absl::StatusOr<bool> HasBlob(const std::string& guid);
  // Visits every blob (GUID, size) in GUID order; stops at the first error.
  absl::Status ForEachBlob(const std::function<absl::Status(const std::string&, uint64_t)>& fn);
  // Visits every message row of every mailbox.
  absl::Status ForEachMessage(
      const std::function<absl::Status(const std::string& mailbox_id, const MessageInfo&)>& fn);
  std::map<std::string, QuotaInfo> Quotas() const;
  QuotaInfo Quota(const std::string& user) const;

  // Used by snapshot import: inserts state directly, then SetState() once.
  absl::Status ImportMailbox(const MailboxInfo& mb);
  absl::Status ImportMessage(const std::string& mailbox_id, const MessageInfo& m);
  absl::Status ImportBlob(const std::string& guid, uint64_t size);
  absl::Status ImportQuota(const std::string& user, uint64_t storage_limit,
                           uint64_t message_limit);
  absl::Status FinishImport(uint64_t lsn, uint64_t epoch, const std::vector<EpochStart>& epochs);

  absl::Status Begin();
  absl::Status Commit();
  absl::Status Rollback();

 private:
  Index() = default;
  absl::Status CreateSchema();
  absl::Status Load();
  absl::Status ApplyOne(const LogRecord& r);
  absl::Status SaveMailbox(const MailboxInfo& mb);
  absl::Status SetMeta(const std::string& key, uint64_t value);
  void ReplaceMailboxDigest(const MailboxInfo* before, const MailboxInfo* after);

  std::unique_ptr<sqlite::Database> db_;
  uint64_t applied_lsn_ = 0;
  uint64_t applied_epoch_ = 0;
  uint64_t log_start_lsn_ = 1;
  uint64_t spool_checkpoint_lsn_ = 0;
  absl::flat_hash_map<std::string, MailboxInfo> mailboxes_;   // by id
  absl::flat_hash_map<std::string, std::string> by_name_;     // name -> id
  std::map<std::string, QuotaInfo> quotas_;                    // limits; usage computed
  std::vector<EpochStart> epochs_;
  Digest slot_digest_;
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_INDEX_H_
