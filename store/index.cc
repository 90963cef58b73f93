#include "store/index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/mailbox_name.h"

namespace mailrepl {
namespace {

constexpr int kSchemaVersion = 2;

std::string JoinFlags(const std::vector<std::string>& flags) { return absl::StrJoin(flags, " "); }
std::vector<std::string> SplitFlags(const std::string& s) {
  return absl::StrSplit(s, ' ', absl::SkipEmpty());
}
std::vector<std::string> ToVector(const google::protobuf::RepeatedPtrField<std::string>& f) {
  return NormalizeFlags(std::vector<std::string>(f.begin(), f.end()));
}
// Whether the flags read back as themselves: a row keeps them joined with
// single spaces (JoinFlags), so an empty flag or one holding a space would
// come back as other flags, and the message's digest would no longer be
// that of its row. Slot::Append and SetFlags refuse such flags
// (ValidateFlag); a record or snapshot made elsewhere may still hold them.
bool FlagsStorable(const std::vector<std::string>& flags) {
  return std::none_of(flags.begin(), flags.end(), [](const std::string& f) {
    return f.empty() || f.find(' ') != std::string::npos;
  });
}
constexpr absl::string_view kUnstorableFlag = "a flag is empty or holds a space";

absl::Status Misfit(const LogRecord& r, absl::string_view why) {
  return absl::FailedPreconditionError(
      absl::StrCat("record LSN ", r.lsn, " (", RecordTypeName(r.type), ") does not apply: ", why));
}

MessageInfo ReadMessage(const sqlite::Statement& st) {
  MessageInfo m;
  m.uid = static_cast<uint32_t>(st.ColumnInt(0));
  m.guid = st.ColumnBlob(1);
  m.size = static_cast<uint64_t>(st.ColumnInt(2));
  m.internal_date = st.ColumnInt(3);
  m.flags = SplitFlags(st.ColumnText(4));
  m.modseq = static_cast<uint64_t>(st.ColumnInt(5));
  m.expunged = st.ColumnInt(6) != 0;
  return m;
}

Digest DigestOf(const MessageInfo& m) {
  return MessageDigest(m.uid, m.guid, m.flags, m.modseq, m.expunged);
}

}  // namespace

std::string RecordMailboxId(const LogRecord& r) {
  switch (r.type) {
    case RecordType::kCreateMailbox: {
      logpb::CreateMailbox p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kRenameMailbox: {
      logpb::RenameMailbox p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kDeleteMailbox: {
      logpb::DeleteMailbox p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kAppend: {
      logpb::Append p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kSetFlags: {
      logpb::SetFlags p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kExpunge: {
      logpb::Expunge p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    case RecordType::kRepairMailbox: {
      logpb::RepairMailbox p;
      return p.ParseFromString(r.payload) ? p.mailbox_id() : "";
    }
    default:
      return "";
  }
}

std::vector<std::string> NormalizeFlags(std::vector<std::string> flags) {
  std::sort(flags.begin(), flags.end());
  flags.erase(std::unique(flags.begin(), flags.end()), flags.end());
  return flags;
}

absl::StatusOr<std::unique_ptr<Index>> Index::OpenReadOnly(const std::string& path,
                                                            ViewScope scope) {
  std::unique_ptr<Index> ix(new Index());
  ix->read_only_ = true;
  ASSIGN_OR_RETURN(ix->db_, sqlite::Database::OpenReadOnly(path));
  RETURN_IF_ERROR(ix->db_->Exec("BEGIN"));  // every read below sees one state
  RETURN_IF_ERROR(ix->Load(scope));
  return ix;
}

absl::Status Index::LoadState() {
  if (state_loaded_) return absl::OkStatus();
  return LoadMailboxesAndQuotas();
}

absl::Status Index::StoreSlotDigest() {
  if (stored_slot_digest_ == slot_digest_) return absl::OkStatus();
  RETURN_IF_ERROR(SetMeta("slot_digest_a", slot_digest_.a));
  RETURN_IF_ERROR(SetMeta("slot_digest_b", slot_digest_.b));
  stored_slot_digest_ = slot_digest_;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Index>> Index::Open(const std::string& path,
                                                    bool autocheckpoint) {
  std::unique_ptr<Index> ix(new Index());
  ASSIGN_OR_RETURN(ix->db_, sqlite::Database::Open(path, /*synchronous_full=*/false));
  if (!autocheckpoint) RETURN_IF_ERROR(ix->db_->Exec("PRAGMA wal_autocheckpoint=0"));
  RETURN_IF_ERROR(ix->CreateSchema());
  RETURN_IF_ERROR(ix->Load());
  return ix;
}

absl::Status Index::CheckpointWal(const std::string& path) {
  ASSIGN_OR_RETURN(auto db, sqlite::Database::Open(path, /*synchronous_full=*/false));
  return db->Exec("PRAGMA wal_checkpoint(PASSIVE)");
}

absl::Status Index::CreateSchema() {
  RETURN_IF_ERROR(db_->Exec(R"sql(
    CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS mailboxes(
      id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
      uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL, highest_modseq INTEGER NOT NULL,
      messages INTEGER NOT NULL, bytes INTEGER NOT NULL, msum_a INTEGER NOT NULL,
      msum_b INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS messages(
      mailbox TEXT NOT NULL, uid INTEGER NOT NULL, guid BLOB NOT NULL, size INTEGER NOT NULL,
      internal_date INTEGER NOT NULL, flags TEXT NOT NULL, modseq INTEGER NOT NULL,
      expunged INTEGER NOT NULL, PRIMARY KEY(mailbox, uid)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS blobs(guid BLOB PRIMARY KEY, size INTEGER NOT NULL, pack INTEGER,
      offset INTEGER) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS quotas(user TEXT PRIMARY KEY, storage_limit INTEGER NOT NULL,
      message_limit INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS epochs(epoch INTEGER PRIMARY KEY, first_lsn INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS quarantine(mailbox_id TEXT PRIMARY KEY, name TEXT NOT NULL,
      lsn INTEGER NOT NULL, reason TEXT NOT NULL);
  )sql"));
  ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT value FROM meta WHERE key='schema_version'"));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return SetMeta("schema_version", kSchemaVersion);
  if (st.ColumnInt(0) != kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("index ", db_->path(), " has schema version ", st.ColumnInt(0),
                     ", this build knows ", kSchemaVersion, "; run 'mailctl reconstruct'"));
  }
  return absl::OkStatus();
}

absl::Status Index::SetMeta(const std::string& key, uint64_t value) {
  ASSIGN_OR_RETURN(auto* st, db_->Cached("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"));
  st->Bind(1, key);
  st->Bind(2, static_cast<int64_t>(value));
  return st->Run();
}

absl::Status Index::Load(ViewScope scope) {
  epochs_.clear();
  quarantine_.clear();
  applied_lsn_ = applied_epoch_ = spool_checkpoint_lsn_ = applied_local_ = seen_epoch_ = 0;
  log_start_lsn_ = 1;
  stored_slot_digest_.reset();
  state_loaded_ = false;
  {
    std::optional<uint64_t> digest_a, digest_b;
    ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT key, value FROM meta"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      std::string k = st.ColumnText(0);
      uint64_t v = static_cast<uint64_t>(st.ColumnInt(1));
      if (k == "applied_lsn") applied_lsn_ = v;
      if (k == "applied_epoch") applied_epoch_ = v;
      if (k == "log_start_lsn") log_start_lsn_ = v;
      if (k == "spool_checkpoint_lsn") spool_checkpoint_lsn_ = v;
      if (k == "applied_local") applied_local_ = v;
      if (k == "seen_epoch") seen_epoch_ = v;
      if (k == "slot_digest_a") digest_a = v;
      if (k == "slot_digest_b") digest_b = v;
    }
    if (digest_a && digest_b) stored_slot_digest_ = Digest{*digest_a, *digest_b};
  }
  {
    ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT epoch, first_lsn FROM epochs ORDER BY epoch"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      epochs_.push_back({static_cast<uint64_t>(st.ColumnInt(0)),
                         static_cast<uint64_t>(st.ColumnInt(1))});
    }
  }
  {
    ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT mailbox_id, name, lsn, reason FROM quarantine"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      Quarantine q{st.ColumnText(0), st.ColumnText(1), static_cast<uint64_t>(st.ColumnInt(2)),
                   st.ColumnText(3)};
      quarantine_[q.mailbox_id] = q;
    }
  }
  mailboxes_.clear();
  by_name_.clear();
  quotas_.clear();
  if (scope == ViewScope::kPosition && stored_slot_digest_) {
    slot_digest_ = *stored_slot_digest_;
    return absl::OkStatus();
  }
  return LoadMailboxesAndQuotas();
}

absl::Status Index::LoadMailboxesAndQuotas() {
  mailboxes_.clear();
  by_name_.clear();
  quotas_.clear();
  slot_digest_ = Digest{};
  {
    ASSIGN_OR_RETURN(auto st, db_->Prepare(
        "SELECT id, name, owner, uidvalidity, last_uid, highest_modseq, messages, bytes, msum_a, "
        "msum_b FROM mailboxes"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      MailboxInfo mb;
      mb.id = st.ColumnText(0);
      mb.name = st.ColumnText(1);
      mb.owner = st.ColumnText(2);
      mb.uidvalidity = static_cast<uint32_t>(st.ColumnInt(3));
      mb.last_uid = static_cast<uint32_t>(st.ColumnInt(4));
      mb.highest_modseq = static_cast<uint64_t>(st.ColumnInt(5));
      mb.messages = static_cast<uint64_t>(st.ColumnInt(6));
      mb.bytes = static_cast<uint64_t>(st.ColumnInt(7));
      mb.message_sum.a = static_cast<uint64_t>(st.ColumnInt(8));
      mb.message_sum.b = static_cast<uint64_t>(st.ColumnInt(9));
      slot_digest_.Add(MailboxSlotDigest(mb.id, mb.MailboxDigest()));
      by_name_[mb.name] = mb.id;
      mailboxes_[mb.id] = std::move(mb);
    }
  }
  {
    ASSIGN_OR_RETURN(auto st, db_->Prepare("SELECT user, storage_limit, message_limit FROM quotas"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      QuotaInfo q;
      q.user = st.ColumnText(0);
      q.storage_limit = static_cast<uint64_t>(st.ColumnInt(1));
      q.message_limit = static_cast<uint64_t>(st.ColumnInt(2));
      slot_digest_.Add(QuotaDigest(q.user, q.storage_limit, q.message_limit));
      quotas_[q.user] = q;
    }
  }
  state_loaded_ = true;
  return absl::OkStatus();
}

absl::Status Index::SetSeenEpoch(uint64_t epoch) {
  if (epoch <= seen_epoch_) return absl::OkStatus();
  RETURN_IF_ERROR(SetMeta("seen_epoch", epoch));
  seen_epoch_ = epoch;
  return absl::OkStatus();
}

absl::Status Index::QuarantineMailbox(const std::string& id, const LogRecord& r,
                                      absl::string_view why) {
  const MailboxInfo* mb = FindMailbox(id);
  Quarantine q{id, mb ? mb->name : std::string("(unknown)"), r.lsn, std::string(why)};
  ASSIGN_OR_RETURN(auto st, db_->Prepare(
      "INSERT OR REPLACE INTO quarantine(mailbox_id, name, lsn, reason) VALUES(?,?,?,?)"));
  st.Bind(1, q.mailbox_id);
  st.Bind(2, q.name);
  st.Bind(3, static_cast<int64_t>(q.lsn));
  st.Bind(4, q.reason);
  RETURN_IF_ERROR(st.Run());
  quarantine_[id] = std::move(q);
  return absl::OkStatus();
}

absl::Status Index::Begin() { return db_->Exec("BEGIN IMMEDIATE"); }
absl::Status Index::Commit() { return db_->Exec("COMMIT"); }
absl::Status Index::Rollback() {
  absl::Status s = db_->Exec("ROLLBACK");
  absl::Status l = Load();  // in-memory caches back to the committed state
  return s.ok() ? l : s;
}

absl::Status Index::Clear() {
  RETURN_IF_ERROR(db_->Exec(
      "BEGIN; DELETE FROM messages; DELETE FROM mailboxes; DELETE FROM blobs WHERE pack IS NULL;"
      "DELETE FROM quotas;"
      "DELETE FROM epochs; DELETE FROM quarantine; DELETE FROM meta WHERE key <> 'schema_version'; COMMIT;"));
  return Load();
}

absl::Status Index::SetLogStart(uint64_t lsn) {
  RETURN_IF_ERROR(SetMeta("log_start_lsn", lsn));
  log_start_lsn_ = lsn;
  return absl::OkStatus();
}

absl::Status Index::SetSpoolCheckpoint(uint64_t lsn) {
  RETURN_IF_ERROR(SetMeta("spool_checkpoint_lsn", lsn));
  spool_checkpoint_lsn_ = lsn;
  return absl::OkStatus();
}

const MailboxInfo* Index::FindMailbox(const std::string& id) const {
  auto it = mailboxes_.find(id);
  return it == mailboxes_.end() ? nullptr : &it->second;
}

const MailboxInfo* Index::FindMailboxByName(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : FindMailbox(it->second);
}

void Index::ReplaceMailboxDigest(const MailboxInfo* before, const MailboxInfo* after) {
  if (before) slot_digest_.Subtract(MailboxSlotDigest(before->id, before->MailboxDigest()));
  if (after) slot_digest_.Add(MailboxSlotDigest(after->id, after->MailboxDigest()));
}

absl::Status Index::SaveMailbox(const MailboxInfo& mb) {
  auto known = mailboxes_.find(mb.id);
  if (known != mailboxes_.end() && known->second.name == mb.name) {
    // The hot path (appends, flags): only the counters change, so no
    // delete and re-insert of the row and its name index entry.
    ASSIGN_OR_RETURN(auto* st, db_->Cached(
        "UPDATE mailboxes SET last_uid = ?, highest_modseq = ?, messages = ?, bytes = ?, "
        "msum_a = ?, msum_b = ? WHERE id = ?"));
    st->Bind(1, int64_t{mb.last_uid});
    st->Bind(2, static_cast<int64_t>(mb.highest_modseq));
    st->Bind(3, static_cast<int64_t>(mb.messages));
    st->Bind(4, static_cast<int64_t>(mb.bytes));
    st->Bind(5, static_cast<int64_t>(mb.message_sum.a));
    st->Bind(6, static_cast<int64_t>(mb.message_sum.b));
    st->Bind(7, mb.id);
    return st->Run();
  }
  ASSIGN_OR_RETURN(auto* st, db_->Cached(
      "INSERT OR REPLACE INTO mailboxes(id, name, owner, uidvalidity, last_uid, highest_modseq, "
      "messages, bytes, msum_a, msum_b) VALUES(?,?,?,?,?,?,?,?,?,?)"));
  st->Bind(1, mb.id);
  st->Bind(2, mb.name);
  st->Bind(3, mb.owner);
  st->Bind(4, int64_t{mb.uidvalidity});
  st->Bind(5, int64_t{mb.last_uid});
  st->Bind(6, static_cast<int64_t>(mb.highest_modseq));
  st->Bind(7, static_cast<int64_t>(mb.messages));
  st->Bind(8, static_cast<int64_t>(mb.bytes));
  st->Bind(9, static_cast<int64_t>(mb.message_sum.a));
  st->Bind(10, static_cast<int64_t>(mb.message_sum.b));
  return st->Run();
}

absl::Status Index::Apply(const std::vector<LogRecord>& records, bool quarantine_misfits) {
  if (records.empty()) return absl::OkStatus();
  if (read_only_) return absl::FailedPreconditionError("index opened read-only");
  RETURN_IF_ERROR(Begin());
  absl::Status s;
  for (const LogRecord& r : records) {
    const bool local = IsLocalRecordType(r.type);
    const uint64_t want = local ? applied_lsn_ : applied_lsn_ + 1;
    if (r.lsn != want) {
      s = absl::FailedPreconditionError(absl::StrCat("index ", db_->path(), " is at LSN ",
                                                     applied_lsn_, ", cannot apply LSN ", r.lsn));
      break;
    }
    std::string mailbox = quarantine_misfits ? RecordMailboxId(r) : std::string();
    if (quarantine_misfits && !mailbox.empty() && quarantine_.contains(mailbox) &&
        r.type != RecordType::kRepairMailbox) {
      // Skipped: a resync of the mailbox will bring its state.
    } else if (quarantine_misfits && !mailbox.empty()) {
      RETURN_IF_ERROR(db_->Exec("SAVEPOINT record"));
      s = ApplyOne(r);
      if (!s.ok() && s.code() == absl::StatusCode::kFailedPrecondition) {
        RETURN_IF_ERROR(db_->Exec("ROLLBACK TO record"));
        s = QuarantineMailbox(mailbox, r, s.message());
      }
      if (s.ok()) s = db_->Exec("RELEASE record");
    } else {
      s = ApplyOne(r);
    }
    if (!s.ok()) break;
    if (local) {
      ++applied_local_;
    } else {
      applied_lsn_ = r.lsn;
      applied_epoch_ = r.epoch;
      applied_local_ = 0;
    }
  }
  if (s.ok()) s = SetMeta("applied_lsn", applied_lsn_);
  if (s.ok()) s = SetMeta("applied_epoch", applied_epoch_);
  if (s.ok()) s = SetMeta("applied_local", applied_local_);
  if (s.ok()) s = StoreSlotDigest();
  if (s.ok()) s = Commit();
  if (!s.ok()) {
    Rollback().IgnoreError();  // reloads applied_lsn_ and the caches
    return s;
  }
  return absl::OkStatus();
}

absl::Status Index::ApplyOne(const LogRecord& r) {
  switch (r.type) {
    case RecordType::kCreateMailbox: {
      logpb::CreateMailbox p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      if (mailboxes_.contains(p.mailbox_id())) return Misfit(r, "mailbox id exists");
      if (by_name_.contains(p.name())) return Misfit(r, "mailbox name exists");
      if (!ValidateMailboxName(p.name()).ok()) return Misfit(r, "invalid mailbox name");
      MailboxInfo mb;
      mb.id = p.mailbox_id();
      mb.name = p.name();
      mb.owner = MailboxOwner(p.name());
      mb.uidvalidity = p.uidvalidity();
      RETURN_IF_ERROR(SaveMailbox(mb));
      ReplaceMailboxDigest(nullptr, &mb);
      by_name_[mb.name] = mb.id;
      mailboxes_[mb.id] = std::move(mb);
      return absl::OkStatus();
    }
    case RecordType::kRenameMailbox: {
      logpb::RenameMailbox p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      auto it = mailboxes_.find(p.mailbox_id());
      if (it == mailboxes_.end()) return Misfit(r, "no such mailbox id");
      if (by_name_.contains(p.new_name())) return Misfit(r, "new name exists");
      if (!ValidateMailboxName(p.new_name()).ok()) return Misfit(r, "invalid mailbox name");
      MailboxInfo after = it->second;
      after.name = p.new_name();
      after.owner = MailboxOwner(p.new_name());
      RETURN_IF_ERROR(SaveMailbox(after));
      ReplaceMailboxDigest(&it->second, &after);
      by_name_.erase(it->second.name);
      by_name_[after.name] = after.id;
      it->second = std::move(after);
      return absl::OkStatus();
    }
    case RecordType::kDeleteMailbox: {
      logpb::DeleteMailbox p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      auto it = mailboxes_.find(p.mailbox_id());
      if (it == mailboxes_.end()) return Misfit(r, "no such mailbox id");
      ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM messages WHERE mailbox = ?"));
      del.Bind(1, p.mailbox_id());
      RETURN_IF_ERROR(del.Run());
      ASSIGN_OR_RETURN(auto delmb, db_->Prepare("DELETE FROM mailboxes WHERE id = ?"));
      delmb.Bind(1, p.mailbox_id());
      RETURN_IF_ERROR(delmb.Run());
      ReplaceMailboxDigest(&it->second, nullptr);
      by_name_.erase(it->second.name);
      mailboxes_.erase(it);
      return absl::OkStatus();
    }
    case RecordType::kAppend: {
      logpb::Append p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      auto it = mailboxes_.find(p.mailbox_id());
      if (it == mailboxes_.end()) return Misfit(r, "no such mailbox id");
      if (p.uid() <= it->second.last_uid) return Misfit(r, "UID not above the mailbox's last UID");
      if (p.guid().size() != 20) return Misfit(r, "GUID is not 20 bytes");
      MessageInfo m;
      m.uid = p.uid();
      m.guid = p.guid();
      m.size = p.size();
      m.internal_date = p.internal_date();
      m.flags = ToVector(p.flags());
      if (!FlagsStorable(m.flags)) return Misfit(r, kUnstorableFlag);
      m.modseq = p.modseq();
      // A body the record carries gets its blobs row once it is in a pack
      // (SetBlobLocation): one random B-tree page less per new message here.
      RETURN_IF_ERROR(InsertMessage(p.mailbox_id(), m, /*add_blob=*/!p.has_body()));
      MailboxInfo after = it->second;
      after.last_uid = m.uid;
      after.highest_modseq = std::max(after.highest_modseq, m.modseq);
      after.messages += 1;
      after.bytes += m.size;
      after.message_sum.Add(DigestOf(m));
      RETURN_IF_ERROR(SaveMailbox(after));
      ReplaceMailboxDigest(&it->second, &after);
      it->second = std::move(after);
      return absl::OkStatus();
    }
    case RecordType::kSetFlags:
    case RecordType::kExpunge: {
      std::string mailbox_id;
      uint64_t modseq;
      std::vector<std::pair<uint32_t, std::optional<std::vector<std::string>>>> changes;
      if (r.type == RecordType::kSetFlags) {
        logpb::SetFlags p;
        if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
        mailbox_id = p.mailbox_id();
        modseq = p.modseq();
        for (const auto& c : p.changes()) {
          changes.push_back({c.uid(), ToVector(c.flags())});
          if (!FlagsStorable(*changes.back().second)) return Misfit(r, kUnstorableFlag);
        }
      } else {
        logpb::Expunge p;
        if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
        mailbox_id = p.mailbox_id();
        modseq = p.modseq();
        for (uint32_t uid : p.uids()) changes.push_back({uid, std::nullopt});
      }
      auto it = mailboxes_.find(mailbox_id);
      if (it == mailboxes_.end()) return Misfit(r, "no such mailbox id");
      MailboxInfo after = it->second;
      ASSIGN_OR_RETURN(auto* upd, db_->Cached(
          "UPDATE messages SET flags = ?, modseq = ?, expunged = ? WHERE mailbox = ? AND uid = ?"));
      for (auto& [uid, flags] : changes) {
        ASSIGN_OR_RETURN(auto old, GetMessage(mailbox_id, uid));
        if (!old) return Misfit(r, absl::StrCat("no message with UID ", uid));
        if (old->expunged) return Misfit(r, absl::StrCat("UID ", uid, " is expunged"));
        MessageInfo m = *old;
        if (flags) {
          m.flags = std::move(*flags);
        } else {
          m.expunged = true;
          after.messages -= 1;
          after.bytes -= m.size;
        }
        m.modseq = modseq;
        after.message_sum.Subtract(DigestOf(*old));
        after.message_sum.Add(DigestOf(m));
        upd->Bind(1, JoinFlags(m.flags));
        upd->Bind(2, static_cast<int64_t>(m.modseq));
        upd->Bind(3, int64_t{m.expunged ? 1 : 0});
        upd->Bind(4, mailbox_id);
        upd->Bind(5, int64_t{uid});
        RETURN_IF_ERROR(upd->Run());
      }
      after.highest_modseq = std::max(after.highest_modseq, modseq);
      RETURN_IF_ERROR(SaveMailbox(after));
      ReplaceMailboxDigest(&it->second, &after);
      it->second = std::move(after);
      return absl::OkStatus();
    }
    case RecordType::kSetQuota: {
      logpb::SetQuota p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      auto old = quotas_.find(p.user());
      if (old != quotas_.end()) {
        slot_digest_.Subtract(
            QuotaDigest(p.user(), old->second.storage_limit, old->second.message_limit));
      }
      ASSIGN_OR_RETURN(auto st, db_->Prepare(
          "INSERT OR REPLACE INTO quotas(user, storage_limit, message_limit) VALUES(?,?,?)"));
      st.Bind(1, p.user());
      st.Bind(2, static_cast<int64_t>(p.storage_limit()));
      st.Bind(3, static_cast<int64_t>(p.message_limit()));
      RETURN_IF_ERROR(st.Run());
      QuotaInfo& q = quotas_[p.user()];
      q.user = p.user();
      q.storage_limit = p.storage_limit();
      q.message_limit = p.message_limit();
      slot_digest_.Add(QuotaDigest(q.user, q.storage_limit, q.message_limit));
      return absl::OkStatus();
    }
    case RecordType::kBeginEpoch: {
      logpb::BeginEpoch p;
      if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
      if (p.epoch() != r.epoch) return Misfit(r, "epoch in payload differs from header");
      if (!epochs_.empty() && epochs_.back().epoch >= r.epoch) {
        return Misfit(r, "epoch not above the previous epoch");
      }
      ASSIGN_OR_RETURN(auto st, db_->Prepare("INSERT INTO epochs(epoch, first_lsn) VALUES(?,?)"));
      st.Bind(1, static_cast<int64_t>(r.epoch));
      st.Bind(2, static_cast<int64_t>(r.lsn));
      RETURN_IF_ERROR(st.Run());
      epochs_.push_back({r.epoch, r.lsn});
      return absl::OkStatus();
    }
    case RecordType::kAdminNote:
      return absl::OkStatus();
    case RecordType::kRepairMailbox:
      return ApplyRepair(r);
    default:
      return Misfit(r, "not a change-log record type");
  }
}

absl::Status Index::InsertMessage(const std::string& mailbox_id, const MessageInfo& m,
                                  bool add_blob) {
  ASSIGN_OR_RETURN(auto* ins, db_->Cached(
      "INSERT INTO messages(mailbox, uid, guid, size, internal_date, flags, modseq, expunged) "
      "VALUES(?,?,?,?,?,?,?,?)"));
  ins->Bind(1, mailbox_id);
  ins->Bind(2, int64_t{m.uid});
  ins->BindBlob(3, m.guid);
  ins->Bind(4, static_cast<int64_t>(m.size));
  ins->Bind(5, m.internal_date);
  ins->Bind(6, JoinFlags(m.flags));
  ins->Bind(7, static_cast<int64_t>(m.modseq));
  ins->Bind(8, int64_t{m.expunged ? 1 : 0});
  RETURN_IF_ERROR(ins->Run());
  if (!add_blob) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto* blob, db_->Cached("INSERT OR IGNORE INTO blobs(guid, size) VALUES(?,?)"));
  blob->BindBlob(1, m.guid);
  blob->Bind(2, static_cast<int64_t>(m.size));
  return blob->Run();
}

absl::Status Index::ApplyRepair(const LogRecord& r) {
  logpb::RepairMailbox p;
  if (!p.ParseFromString(r.payload)) return Misfit(r, "unparsable payload");
  for (const auto& sm : p.messages()) {
    if (!FlagsStorable(ToVector(sm.flags()))) return Misfit(r, kUnstorableFlag);
  }
  const std::string& id = p.mailbox_id();
  // The steps below change the in-memory copy of the mailboxes as they go.
  // If one fails (UIDs twice: a constraint), the caller rolls this record's
  // rows back (on a replica, to quarantine the mailbox and go on), so the
  // copy must go back too: the mailboxes it can drop or replace, and the
  // slot digest.
  const Digest digest_before = slot_digest_;
  std::vector<MailboxInfo> before;
  if (const MailboxInfo* mb = FindMailbox(id)) before.push_back(*mb);
  if (const MailboxInfo* clash = FindMailboxByName(p.mailbox().name());
      clash != nullptr && clash->id != id && !p.deleted()) {
    before.push_back(*clash);
  }
  absl::Status s = [&]() -> absl::Status {
    // Drop whatever this slot has for the mailbox id (and for the name).
    auto drop = [&](const std::string& drop_id) -> absl::Status {
      auto it = mailboxes_.find(drop_id);
      ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM messages WHERE mailbox = ?"));
      del.Bind(1, drop_id);
      RETURN_IF_ERROR(del.Run());
      ASSIGN_OR_RETURN(auto delmb, db_->Prepare("DELETE FROM mailboxes WHERE id = ?"));
      delmb.Bind(1, drop_id);
      RETURN_IF_ERROR(delmb.Run());
      if (it != mailboxes_.end()) {
        ReplaceMailboxDigest(&it->second, nullptr);
        by_name_.erase(it->second.name);
        mailboxes_.erase(it);
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(drop(id));
    if (!p.deleted()) {
      if (const MailboxInfo* clash = FindMailboxByName(p.mailbox().name())) {
        RETURN_IF_ERROR(drop(std::string(clash->id)));
      }
      MailboxInfo mb;
      mb.id = id;
      mb.name = p.mailbox().name();
      mb.owner = MailboxOwner(mb.name);
      mb.uidvalidity = p.mailbox().uidvalidity();
      mb.last_uid = p.mailbox().last_uid();
      mb.highest_modseq = p.mailbox().highest_modseq();
      for (const auto& sm : p.messages()) {
        MessageInfo m;
        m.uid = sm.uid();
        m.guid = sm.guid();
        m.size = sm.size();
        m.internal_date = sm.internal_date();
        m.flags = ToVector(sm.flags());
        m.modseq = sm.modseq();
        m.expunged = sm.expunged();
        RETURN_IF_ERROR(InsertMessage(id, m));
        if (!m.expunged) {
          mb.messages += 1;
          mb.bytes += m.size;
        }
        mb.message_sum.Add(DigestOf(m));
      }
      RETURN_IF_ERROR(SaveMailbox(mb));
      ReplaceMailboxDigest(nullptr, &mb);
      by_name_[mb.name] = mb.id;
      mailboxes_[mb.id] = std::move(mb);
    }
    ASSIGN_OR_RETURN(auto unq, db_->Prepare("DELETE FROM quarantine WHERE mailbox_id = ?"));
    unq.Bind(1, id);
    RETURN_IF_ERROR(unq.Run());
    quarantine_.erase(id);
    return absl::OkStatus();
  }();
  if (!s.ok()) {
    if (auto it = mailboxes_.find(id); it != mailboxes_.end()) {
      by_name_.erase(it->second.name);
      mailboxes_.erase(it);
    }
    for (MailboxInfo& mb : before) {
      by_name_[mb.name] = mb.id;
      mailboxes_[mb.id] = std::move(mb);
    }
    slot_digest_ = digest_before;
  }
  return s;
}

absl::StatusOr<std::vector<MessageInfo>> Index::ListMessages(const std::string& mailbox_id,
                                                             bool include_expunged) {
  ASSIGN_OR_RETURN(auto st, db_->Prepare(
      "SELECT uid, guid, size, internal_date, flags, modseq, expunged FROM messages "
      "WHERE mailbox = ? ORDER BY uid"));
  st.Bind(1, mailbox_id);
  std::vector<MessageInfo> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    MessageInfo m = ReadMessage(st);
    if (include_expunged || !m.expunged) out.push_back(std::move(m));
  }
  return out;
}

absl::StatusOr<std::optional<MessageInfo>> Index::GetMessage(const std::string& mailbox_id,
                                                             uint32_t uid) {
  ASSIGN_OR_RETURN(auto* st, db_->Cached(
      "SELECT uid, guid, size, internal_date, flags, modseq, expunged FROM messages "
      "WHERE mailbox = ? AND uid = ?"));
  st->Bind(1, mailbox_id);
  st->Bind(2, int64_t{uid});
  ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return std::optional<MessageInfo>();
  return std::optional<MessageInfo>(ReadMessage(*st));
}

absl::StatusOr<bool> Index::HasBlob(const std::string& guid) {
  ASSIGN_OR_RETURN(auto* st, db_->Cached("SELECT 1 FROM blobs WHERE guid = ?"));
  st->BindBlob(1, guid);
  return st->Step();
}

absl::StatusOr<std::optional<BodyLocation>> Index::BlobLocation(const std::string& guid) {
  ASSIGN_OR_RETURN(auto* st, db_->Cached("SELECT pack, offset FROM blobs WHERE guid = ?"));
  st->BindBlob(1, guid);
  ASSIGN_OR_RETURN(bool row, st->Step());
  std::optional<BodyLocation> loc;
  if (row && !st->ColumnIsNull(0)) {
    loc = BodyLocation{static_cast<uint32_t>(st->ColumnInt(0)),
                       static_cast<uint64_t>(st->ColumnInt(1))};
  }
  RETURN_IF_ERROR(st->Run());  // resets the statement
  return loc;
}

absl::Status Index::SetBlobLocation(const StoredBody& b) {
  if (read_only_) return absl::FailedPreconditionError("index opened read-only");
  ASSIGN_OR_RETURN(auto* st, db_->Cached(
      "INSERT INTO blobs(guid, size, pack, offset) VALUES(?,?,?,?) "
      "ON CONFLICT(guid) DO UPDATE SET pack = excluded.pack, offset = excluded.offset"));
  st->BindBlob(1, b.guid);
  st->Bind(2, static_cast<int64_t>(b.size));
  st->Bind(3, int64_t{b.location.pack});
  st->Bind(4, static_cast<int64_t>(b.location.offset));
  return st->Run();
}

absl::Status Index::SetBlobLocations(const std::vector<StoredBody>& bodies) {
  RETURN_IF_ERROR(Begin());
  absl::Status s;
  for (const StoredBody& b : bodies) {
    s = SetBlobLocation(b);
    if (!s.ok()) break;
  }
  if (s.ok()) s = Commit();
  if (!s.ok()) db_->Exec("ROLLBACK").IgnoreError();
  return s;
}

absl::Status Index::ForEachBlob(
    const std::function<absl::Status(const std::string&, uint64_t,
                                     const std::optional<BodyLocation>&)>& fn) {
  ASSIGN_OR_RETURN(auto st,
                   db_->Prepare("SELECT guid, size, pack, offset FROM blobs ORDER BY guid"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::OkStatus();
    std::optional<BodyLocation> loc;
    if (!st.ColumnIsNull(2)) {
      loc = BodyLocation{static_cast<uint32_t>(st.ColumnInt(2)),
                         static_cast<uint64_t>(st.ColumnInt(3))};
    }
    RETURN_IF_ERROR(fn(st.ColumnBlob(0), static_cast<uint64_t>(st.ColumnInt(1)), loc));
  }
}

absl::Status Index::ForEachMessage(
    const std::function<absl::Status(const std::string&, const MessageInfo&)>& fn) {
  ASSIGN_OR_RETURN(auto st, db_->Prepare(
      "SELECT uid, guid, size, internal_date, flags, modseq, expunged, mailbox FROM messages "
      "ORDER BY mailbox, uid"));
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::OkStatus();
    RETURN_IF_ERROR(fn(st.ColumnText(7), ReadMessage(st)));
  }
}

std::map<std::string, QuotaInfo> Index::Quotas() const {
  std::map<std::string, QuotaInfo> out = quotas_;
  for (const auto& [id, mb] : mailboxes_) {
    QuotaInfo& q = out[mb.owner];
    q.user = mb.owner;
    q.storage_used += mb.bytes;
    q.messages_used += mb.messages;
  }
  return out;
}

QuotaInfo Index::Quota(const std::string& user) const {
  QuotaInfo q;
  auto it = quotas_.find(user);
  if (it != quotas_.end()) q = it->second;
  q.user = user;
  for (const auto& [id, mb] : mailboxes_) {
    if (mb.owner != user) continue;
    q.storage_used += mb.bytes;
    q.messages_used += mb.messages;
  }
  return q;
}

absl::Status Index::ImportMailbox(const MailboxInfo& mb) {
  // A name the master would never have created (a damaged or hostile
  // snapshot: "../", control bytes) is refused as Slot::CreateMailbox
  // refuses it.
  if (absl::Status name = ValidateMailboxName(mb.name); !name.ok()) {
    return absl::DataLossError(
        absl::StrCat("snapshot mailbox ", mb.id, ": ", name.message()));
  }
  // Ids and names are unique: a second row would replace the first one's
  // (SaveMailbox) while both stayed in memory and in the digest.
  if (FindMailbox(mb.id) != nullptr) {
    return absl::DataLossError(absl::StrCat("snapshot lists mailbox id ", mb.id, " twice"));
  }
  if (FindMailboxByName(mb.name) != nullptr) {
    return absl::DataLossError(absl::StrCat("snapshot lists mailbox name ", mb.name, " twice"));
  }
  RETURN_IF_ERROR(SaveMailbox(mb));
  ReplaceMailboxDigest(nullptr, &mb);
  by_name_[mb.name] = mb.id;
  mailboxes_[mb.id] = mb;
  return absl::OkStatus();
}

absl::Status Index::ImportMessage(const std::string& mailbox_id, const MessageInfo& m) {
  auto it = mailboxes_.find(mailbox_id);
  if (it == mailboxes_.end()) {
    return absl::DataLossError(absl::StrCat("snapshot message for unknown mailbox ", mailbox_id));
  }
  if (!FlagsStorable(m.flags)) {
    return absl::DataLossError(absl::StrCat("snapshot message UID ", m.uid, " of mailbox ",
                                            mailbox_id, ": ", kUnstorableFlag));
  }
  if (m.uid == 0 || m.uid > it->second.last_uid) {
    return absl::DataLossError(absl::StrCat("snapshot message UID ", m.uid, " of mailbox ",
                                            mailbox_id, " is outside 1..", it->second.last_uid,
                                            " (the mailbox's last UID)"));
  }
  RETURN_IF_ERROR(InsertMessage(mailbox_id, m));
  MailboxInfo after = it->second;
  if (!m.expunged) {
    after.messages += 1;
    after.bytes += m.size;
  }
  after.message_sum.Add(DigestOf(m));
  RETURN_IF_ERROR(SaveMailbox(after));
  ReplaceMailboxDigest(&it->second, &after);
  it->second = std::move(after);
  return absl::OkStatus();
}

absl::Status Index::ImportQuota(const std::string& user, uint64_t storage_limit,
                                uint64_t message_limit) {
  LogRecord r;
  r.type = RecordType::kSetQuota;
  logpb::SetQuota p;
  p.set_user(user);
  p.set_storage_limit(storage_limit);
  p.set_message_limit(message_limit);
  r.payload = p.SerializeAsString();
  return ApplyOne(r);
}

absl::Status Index::FinishImport(uint64_t lsn, uint64_t epoch,
                                 const std::vector<EpochStart>& epochs) {
  for (const EpochStart& e : epochs) {
    ASSIGN_OR_RETURN(auto st, db_->Prepare("INSERT INTO epochs(epoch, first_lsn) VALUES(?,?)"));
    st.Bind(1, static_cast<int64_t>(e.epoch));
    st.Bind(2, static_cast<int64_t>(e.first_lsn));
    RETURN_IF_ERROR(st.Run());
  }
  epochs_ = epochs;
  RETURN_IF_ERROR(SetMeta("applied_lsn", lsn));
  RETURN_IF_ERROR(SetMeta("applied_epoch", epoch));
  RETURN_IF_ERROR(SetMeta("log_start_lsn", lsn + 1));
  RETURN_IF_ERROR(StoreSlotDigest());
  applied_lsn_ = lsn;
  applied_epoch_ = epoch;
  log_start_lsn_ = lsn + 1;
  return absl::OkStatus();
}

}  // namespace mailrepl
