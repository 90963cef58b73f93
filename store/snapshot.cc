#include "store/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/mailbox_name.h"
#include "store/log_format.h"

namespace mailrepl {
namespace {

// Buffers encoded entries and writes them out in large chunks.
class EntryWriter {
 public:
  EntryWriter(int fd, std::string path, uint64_t lsn, uint64_t epoch)
      : fd_(fd), path_(std::move(path)), lsn_(lsn), epoch_(epoch) {}
  absl::Status Add(RecordType type, const google::protobuf::Message& m) {
    LogRecord r{lsn_, epoch_, type, m.SerializeAsString()};
    EncodeRecord(r, &buf_);
    if (buf_.size() >= (4u << 20)) return Flush();
    return absl::OkStatus();
  }
  absl::Status Flush() {
    RETURN_IF_ERROR(WriteAll(fd_, buf_, path_));
    buf_.clear();
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::string path_;
  uint64_t lsn_, epoch_;
  std::string buf_;
};

// Reads entries sequentially from a file of records.
class EntryReader {
 public:
  EntryReader(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  // true: *r holds the next entry; false: clean end of file.
  absl::StatusOr<bool> Next(LogRecord* r) {
    for (;;) {
      size_t consumed = 0;
      DecodeStatus st = DecodeRecord(absl::string_view(buf_).substr(pos_), r, &consumed);
      if (st == DecodeStatus::kOk) {
        pos_ += consumed;
        offset_ += consumed;
        return true;
      }
      if (st == DecodeStatus::kBad) return Damaged("bad entry");
      buf_.erase(0, pos_);
      pos_ = 0;
      char chunk[1 << 16];
      ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "read snapshot", path_);
      }
      if (n == 0) {
        if (buf_.empty()) return false;
        return Damaged("truncated entry");
      }
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }
  absl::Status Damaged(absl::string_view why) const {
    return absl::DataLossError(
        absl::StrCat("snapshot ", path_, " offset ", offset_, ": ", why));
  }

 private:
  int fd_;
  std::string path_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace

absl::Status WriteSnapshot(Index& index, Spool* spool, const SlotIdentity& identity,
                           const std::string& path) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create snapshot", tmp);
  absl::Cleanup close_fd = [&] { ::close(fd); };
  EntryWriter w(fd, tmp, index.applied_lsn(), index.applied_epoch());

  logpb::SnapshotHeader h;
  h.set_cluster_id(identity.cluster_id);
  h.set_store_id(identity.store_id);
  h.set_lsn(index.applied_lsn());
  h.set_epoch(index.applied_epoch());
  for (const EpochStart& e : index.epoch_history()) {
    auto* x = h.add_epoch_history();
    x->set_epoch(e.epoch);
    x->set_first_lsn(e.first_lsn);
  }
  RETURN_IF_ERROR(w.Add(RecordType::kSnapshotHeader, h));
  logpb::SnapshotTrailer t;
  for (const auto& [id, mb] : index.mailboxes()) {
    logpb::SnapshotMailbox m;
    m.set_mailbox_id(mb.id);
    m.set_name(mb.name);
    m.set_uidvalidity(mb.uidvalidity);
    m.set_last_uid(mb.last_uid);
    m.set_highest_modseq(mb.highest_modseq);
    RETURN_IF_ERROR(w.Add(RecordType::kSnapshotMailbox, m));
    t.set_mailboxes(t.mailboxes() + 1);
  }
  RETURN_IF_ERROR(index.ForEachMessage([&](const std::string& mailbox_id, const MessageInfo& mi) {
    logpb::SnapshotMessage m;
    m.set_mailbox_id(mailbox_id);
    m.set_uid(mi.uid);
    m.set_guid(mi.guid);
    m.set_size(mi.size);
    m.set_internal_date(mi.internal_date);
    for (const auto& f : mi.flags) m.add_flags(f);
    m.set_modseq(mi.modseq);
    m.set_expunged(mi.expunged);
    t.set_messages(t.messages() + 1);
    return w.Add(RecordType::kSnapshotMessage, m);
  }));
  if (spool != nullptr) {
    RETURN_IF_ERROR(index.ForEachBlob([&](const std::string& guid, uint64_t,
                                          const std::optional<BodyLocation>& loc)
                                          -> absl::Status {
      if (!loc) {
        return absl::FailedPreconditionError(absl::StrCat(
            "body ", GuidHex(guid), " is not in the spool yet; flush the bodies first"));
      }
      ASSIGN_OR_RETURN(std::string body, spool->Read(guid, *loc));
      logpb::SnapshotBody b;
      b.set_guid(guid);
      b.set_body(std::move(body));
      t.set_bodies(t.bodies() + 1);
      return w.Add(RecordType::kSnapshotBody, b);
    }));
  }
  for (const auto& [user, q] : index.quota_limits()) {
    logpb::SnapshotQuota m;
    m.set_user(user);
    m.set_storage_limit(q.storage_limit);
    m.set_message_limit(q.message_limit);
    RETURN_IF_ERROR(w.Add(RecordType::kSnapshotQuota, m));
  }
  t.set_slot_digest(index.slot_digest().Bytes());
  RETURN_IF_ERROR(w.Add(RecordType::kSnapshotTrailer, t));
  RETURN_IF_ERROR(w.Flush());
  if (::fsync(fd) != 0) return ErrnoStatus(errno, "fsync snapshot", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus(errno, "rename snapshot", tmp);
  auto slash = path.find_last_of('/');
  return SyncDir(slash == std::string::npos ? "." : path.substr(0, slash));
}

absl::Status ImportSnapshot(const std::string& path, Index& index, Spool& spool,
                            const SlotIdentity* expect) {
  if (index.applied_lsn() != 0 || !index.mailboxes().empty()) {
    return absl::FailedPreconditionError(
        "snapshot import needs an empty slot; this one already holds state");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open snapshot", path);
  absl::Cleanup close_fd = [&] { ::close(fd); };
  EntryReader reader(fd, path);
  LogRecord r;
  ASSIGN_OR_RETURN(bool any, reader.Next(&r));
  logpb::SnapshotHeader h;
  if (!any || r.type != RecordType::kSnapshotHeader || !h.ParseFromString(r.payload)) {
    return reader.Damaged("does not start with a snapshot header");
  }
  if (expect && (h.cluster_id() != expect->cluster_id || h.store_id() != expect->store_id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", path, " is of cluster ", h.cluster_id(), " store ", h.store_id(),
        ", not of this slot's cluster ", expect->cluster_id, " store ", expect->store_id));
  }
  RETURN_IF_ERROR(index.Begin());
  bool committed = false;
  absl::Cleanup rollback = [&] {
    if (!committed) index.Rollback().IgnoreError();
  };
  uint64_t mailboxes = 0, messages = 0, bodies = 0;
  for (;;) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&r));
    if (!more) return reader.Damaged("no trailer: the snapshot is incomplete");
    if (r.type == RecordType::kSnapshotTrailer) break;
    switch (r.type) {
      case RecordType::kSnapshotMailbox: {
        logpb::SnapshotMailbox m;
        if (!m.ParseFromString(r.payload)) return reader.Damaged("bad mailbox entry");
        MailboxInfo mb;
        mb.id = m.mailbox_id();
        mb.name = m.name();
        mb.owner = MailboxOwner(mb.name);
        mb.uidvalidity = m.uidvalidity();
        mb.last_uid = m.last_uid();
        mb.highest_modseq = m.highest_modseq();
        RETURN_IF_ERROR(index.ImportMailbox(mb));
        ++mailboxes;
        break;
      }
      case RecordType::kSnapshotMessage: {
        logpb::SnapshotMessage m;
        if (!m.ParseFromString(r.payload)) return reader.Damaged("bad message entry");
        MessageInfo mi;
        mi.uid = m.uid();
        mi.guid = m.guid();
        mi.size = m.size();
        mi.internal_date = m.internal_date();
        mi.flags = NormalizeFlags({m.flags().begin(), m.flags().end()});
        mi.modseq = m.modseq();
        mi.expunged = m.expunged();
        RETURN_IF_ERROR(index.ImportMessage(m.mailbox_id(), mi));
        ++messages;
        break;
      }
      case RecordType::kSnapshotBody: {
        logpb::SnapshotBody b;
        if (!b.ParseFromString(r.payload)) return reader.Damaged("bad body entry");
        if (Sha1(b.body()) != b.guid()) return reader.Damaged("body does not hash to its GUID");
        ASSIGN_OR_RETURN(BodyLocation loc, spool.Append(b.guid(), b.body()));
        RETURN_IF_ERROR(index.SetBlobLocation({b.guid(), b.body().size(), loc}));
        ++bodies;
        break;
      }
      case RecordType::kSnapshotQuota: {
        logpb::SnapshotQuota q;
        if (!q.ParseFromString(r.payload)) return reader.Damaged("bad quota entry");
        RETURN_IF_ERROR(index.ImportQuota(q.user(), q.storage_limit(), q.message_limit()));
        break;
      }
      default:
        return reader.Damaged(absl::StrCat("unexpected entry type ", static_cast<int>(r.type)));
    }
  }
  logpb::SnapshotTrailer t;
  if (!t.ParseFromString(r.payload)) return reader.Damaged("bad trailer");
  if (t.mailboxes() != mailboxes || t.messages() != messages) {
    return reader.Damaged("entry counts differ from the trailer");
  }
  Digest want;
  if (!Digest::FromBytes(t.slot_digest(), &want) || !(want == index.slot_digest())) {
    return reader.Damaged("imported state does not match the snapshot's digest");
  }
  std::vector<EpochStart> epochs;
  for (const auto& e : h.epoch_history()) epochs.push_back({e.epoch(), e.first_lsn()});
  RETURN_IF_ERROR(index.FinishImport(h.lsn(), h.epoch(), epochs));
  if (bodies > 0) RETURN_IF_ERROR(spool.Sync());
  RETURN_IF_ERROR(index.Commit());
  committed = true;
  return absl::OkStatus();
}

}  // namespace mailrepl
