// libFuzzer target for the snapshot reader (store/snapshot.h:
// ImportSnapshot), which parses and verifies a snapshot as a replica
// installs an incoming one (Slot::ImportSnapshot) or a rebuilt index
// starts from log/BASE.snapshot: every entry's CRC, the header, the
// entries in any order, bodies hashing to their GUIDs, the trailer's
// counts and the rebuilt slot digest. The snapshot is read from memory
// (a memfd, opened by its /proc/self/fd path: production code unchanged);
// the index it fills is an in-memory SQLite index and its bodies go to a
// spool on tmpfs, both new for every input. Built and run by
// scripts/fuzz.sh.
//
// Input: one control byte, then the bytes of a snapshot file.
//   bit 0: repair the CRC of each entry (walking the declared lengths), so
//          that mutations reach the import logic; clear: the framing.
//   bit 1: first make every body entry's GUID the SHA-1 of its body.
//   bit 2: first rewrite the trailer's counts and digest to what the
//          entries before it sum to (docs/formats.md "Digests"), so that
//          mutated snapshots can import and the state they leave be checked.
//   bit 3: import expecting cluster "test", store 1 (the seeds' identity).
// A custom mutator (disk_fuzz.h) mutates decoded entries and re-encodes
// them with valid CRCs.
//
// Invariants: a refused snapshot says why and leaves the index empty;
// an imported one leaves the index at the header's LSN, epoch and epoch
// history with the trailer's digest, consistent (its digest is what its
// rows sum to), every body readable from the spool, and written out again
// (as log/BASE.snapshot is) it imports to the same state.
//
// Seeds: test/fuzz/corpus/snapshot_fuzzer/, made by the project's own
// writers (Slot::ExportSnapshot, the base snapshot of log retention):
// build-fuzz/bin/make_disk_seeds test/fuzz/corpus (test/fuzz/
// make_disk_seeds.cc; flock /tmp/mr-build.lock cmake --build build-fuzz
// --target make_disk_seeds).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "proto/log.pb.h"
#include "store/digest.h"
#include "store/index.h"
#include "store/log_format.h"
#include "store/snapshot.h"
#include "store/spool.h"
#include "test/fuzz/disk_fuzz.h"

namespace mailrepl {
namespace {

using fuzz::Check;

// Re-encodes the entries at the start of in (up to the first that does not
// decode): GUIDs of bodies made their SHA-1 (fix_guids), the trailer made
// to agree with the entries before it (fix_trailer).
std::string Rewrite(absl::string_view in, bool fix_guids, bool fix_trailer) {
  std::string out;
  absl::string_view rest = in;
  struct Mailbox {
    Digest attributes;
    Digest messages;
  };
  std::map<std::string, Mailbox> mailboxes;
  std::map<std::string, std::pair<uint64_t, uint64_t>> quotas;
  uint64_t mailbox_entries = 0, message_entries = 0, body_entries = 0;
  while (!rest.empty()) {
    LogRecord r;
    size_t consumed = 0;
    if (DecodeRecord(rest, &r, &consumed) != DecodeStatus::kOk) break;
    rest.remove_prefix(consumed);
    switch (r.type) {
      case RecordType::kSnapshotMailbox: {
        logpb::SnapshotMailbox m;
        if (!m.ParseFromString(r.payload)) break;
        mailboxes[m.mailbox_id()].attributes = MailboxAttributesDigest(
            m.mailbox_id(), m.name(), m.uidvalidity(), m.last_uid(), m.highest_modseq());
        ++mailbox_entries;
        break;
      }
      case RecordType::kSnapshotMessage: {
        logpb::SnapshotMessage m;
        if (!m.ParseFromString(r.payload)) break;
        mailboxes[m.mailbox_id()].messages.Add(
            MessageDigest(m.uid(), m.guid(), NormalizeFlags({m.flags().begin(), m.flags().end()}),
                          m.modseq(), m.expunged()));
        ++message_entries;
        break;
      }
      case RecordType::kSnapshotBody: {
        logpb::SnapshotBody b;
        if (!b.ParseFromString(r.payload)) break;
        if (fix_guids) {
          b.set_guid(Sha1(b.body()));
          r.payload = b.SerializeAsString();
        }
        ++body_entries;
        break;
      }
      case RecordType::kSnapshotQuota: {
        logpb::SnapshotQuota q;
        if (!q.ParseFromString(r.payload)) break;
        quotas[q.user()] = {q.storage_limit(), q.message_limit()};
        break;
      }
      case RecordType::kSnapshotTrailer: {
        logpb::SnapshotTrailer t;
        if (!fix_trailer || !t.ParseFromString(r.payload)) break;
        Digest slot;
        for (const auto& [id, mb] : mailboxes) {
          Digest d = mb.attributes;
          d.Add(mb.messages);
          slot.Add(MailboxSlotDigest(id, d));
        }
        for (const auto& [user, q] : quotas) slot.Add(QuotaDigest(user, q.first, q.second));
        t.set_mailboxes(mailbox_entries);
        t.set_messages(message_entries);
        t.set_bodies(body_entries);
        t.set_slot_digest(slot.Bytes());
        r.payload = t.SerializeAsString();
        break;
      }
      default:
        break;
    }
    EncodeRecord(r, &out);
  }
  out.append(rest.data(), rest.size());
  return out;
}

// The snapshot's bytes behind a path, without a file on disk.
class MemFile {
 public:
  MemFile() : fd_(::memfd_create("snapshot", MFD_CLOEXEC)) {
    Check(fd_ >= 0, "memfd_create");
    path_ = absl::StrCat("/proc/self/fd/", fd_);
  }
  const std::string& Set(absl::string_view bytes) {
    Check(::ftruncate(fd_, 0) == 0, "ftruncate memfd");
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done,
                                 static_cast<off_t>(done));
      Check(n > 0, "write memfd");
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// A fresh, empty in-memory index and spool.
struct Target {
  std::unique_ptr<Index> index;
  std::unique_ptr<Spool> spool;
  explicit Target(const std::string& dir) {
    fuzz::ClearDir(dir);
    auto ix = Index::Open(":memory:");
    Check(ix.ok(), "an in-memory index opens");
    index = std::move(*ix);
    spool = std::make_unique<Spool>(dir);
    Check(spool->Init().ok(), "a spool on tmpfs");
  }
};

void CheckEmpty(Index& ix) {
  Check(ix.applied_lsn() == 0 && ix.applied_epoch() == 0 && ix.log_start_lsn() == 1,
        "a refused snapshot leaves the index's position");
  Check(ix.mailboxes().empty() && ix.quota_limits().empty() && ix.epoch_history().empty(),
        "a refused snapshot leaves the index empty");
  Check(ix.slot_digest() == Digest{}, "a refused snapshot leaves the digest");
  bool rows = false;
  Check(ix.ForEachMessage([&](const std::string&, const MessageInfo&) {
          rows = true;
          return absl::OkStatus();
        }).ok() && !rows,
        "a refused snapshot leaves no message rows");
}

}  // namespace
}  // namespace mailrepl

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return mailrepl::fuzz::MutateRecords(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl;
  if (size == 0) return 0;
  static MemFile* file = new MemFile();
  static const std::string dir = fuzz::ScratchDir() + "/spool";
  static const std::string dir2 = fuzz::ScratchDir() + "/spool2";
  static const std::string out = fuzz::ScratchDir() + "/BASE.snapshot";
  const uint8_t control = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((control & 1) != 0) fuzz::RepairRecordCrcs(&bytes);
  if ((control & 6) != 0) bytes = Rewrite(bytes, (control & 2) != 0, (control & 4) != 0);
  const SlotIdentity expect{"test", 1, 1, 0};

  Target t(dir);
  absl::Status s = ImportSnapshot(file->Set(bytes), *t.index, *t.spool,
                                  (control & 8) != 0 ? &expect : nullptr);
  if (!s.ok()) {
    Check(!s.message().empty(), "a refusal says why");
    CheckEmpty(*t.index);
    return 0;
  }
  // The header is the first entry.
  LogRecord first;
  size_t consumed = 0;
  Check(DecodeRecord(bytes, &first, &consumed) == DecodeStatus::kOk,
        "an imported snapshot decodes");
  logpb::SnapshotHeader h;
  Check(first.type == RecordType::kSnapshotHeader && h.ParseFromString(first.payload),
        "an imported snapshot starts with its header");
  Index& ix = *t.index;
  Check(ix.applied_lsn() == h.lsn() && ix.applied_epoch() == h.epoch() &&
            ix.log_start_lsn() == h.lsn() + 1,
        "an imported snapshot sets the index's position");
  Check(ix.epoch_history().size() == static_cast<size_t>(h.epoch_history_size()),
        "an imported snapshot sets the epoch history");
  fuzz::CheckIndexConsistent(ix);
  // Every body is in the spool.
  absl::string_view rest = bytes;
  while (!rest.empty()) {
    LogRecord r;
    if (DecodeRecord(rest, &r, &consumed) != DecodeStatus::kOk) break;
    rest.remove_prefix(consumed);
    if (r.type == RecordType::kSnapshotTrailer) break;
    logpb::SnapshotBody b;
    if (r.type != RecordType::kSnapshotBody || !b.ParseFromString(r.payload)) continue;
    auto loc = ix.BlobLocation(b.guid());
    Check(loc.ok() && loc->has_value(), "an imported body is located");
    auto body = t.spool->Read(b.guid(), **loc);
    Check(body.ok() && Sha1(*body) == b.guid(), "an imported body reads back from the spool");
  }
  // Written out again, without bodies (as log/BASE.snapshot), it imports to
  // the same state.
  const SlotIdentity id{h.cluster_id(), h.store_id(), 1, 0};
  Check(WriteSnapshot(ix, nullptr, id, out).ok(), "an imported state writes out");
  Target t2(dir2);
  absl::Status again = ImportSnapshot(out, *t2.index, *t2.spool);
  Check(again.ok(), "a snapshot written from an imported state imports");
  Check(t2.index->slot_digest() == ix.slot_digest() &&
            t2.index->applied_lsn() == ix.applied_lsn() &&
            t2.index->applied_epoch() == ix.applied_epoch() &&
            t2.index->epoch_history() == ix.epoch_history() &&
            t2.index->mailboxes().size() == ix.mailboxes().size(),
        "a snapshot written from an imported state imports to the same state");
  fuzz::CheckIndexConsistent(*t2.index);
  return 0;
}
