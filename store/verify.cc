#include "store/verify.h"

#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "store/log_reader.h"
#include "store/snapshot.h"

namespace mailrepl {
namespace {

void RemoveIndexFiles(const std::string& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((path + suffix).c_str());
}

}  // namespace

absl::StatusOr<VerifyReport> VerifySlot(Slot& slot, const VerifyOptions& options) {
  VerifyReport report;
  const SlotPaths& paths = slot.paths();
  slot.WaitApplied();  // the views below read the index file themselves

  // 1. An index rebuilt from the log, in a scratch file beside the real one.
  std::string scratch = absl::StrCat(paths.meta, "/verify-", ::getpid(), ".sqlite3");
  RemoveIndexFiles(scratch);
  auto cleanup_scratch = [&] { RemoveIndexFiles(scratch); };
  ASSIGN_OR_RETURN(auto rebuilt, Index::Open(scratch));
  struct stat st;
  if (::stat(paths.base_snapshot().c_str(), &st) == 0) {
    Spool no_bodies(paths.spool);
    absl::Status s = ImportSnapshot(paths.base_snapshot(), *rebuilt, no_bodies);
    if (!s.ok()) report.problems.push_back(std::string(s.message()));
  }
  const uint64_t target = slot.last_lsn();
  auto reader = LogReader::Open(paths.log_dir(), rebuilt->applied_lsn() + 1, false);
  if (!reader.ok()) {
    cleanup_scratch();
    return reader.status();
  }
  std::vector<LogRecord> batch;
  absl::Status apply = absl::OkStatus();
  for (;;) {
    LogRecord r;
    absl::StatusOr<bool> more = reader->Next(&r);
    if (!more.ok()) {
      report.problems.push_back(std::string(more.status().message()));
      break;
    }
    if (!*more || r.lsn > target) break;
    ++report.records;
    batch.push_back(std::move(r));
    if (batch.size() >= 512) {
      apply = rebuilt->Apply(batch);
      batch.clear();
      if (!apply.ok()) break;
    }
  }
  if (apply.ok()) apply = rebuilt->Apply(batch);
  if (!apply.ok()) report.problems.push_back(absl::StrCat("log replay: ", apply.message()));
  if (rebuilt->applied_lsn() != target) {
    report.problems.push_back(absl::StrCat("the log yields state up to LSN ",
                                           rebuilt->applied_lsn(), " but the index is at LSN ",
                                           target));
  }

  // 2. Compare the rebuilt index with the live one, mailbox by mailbox.
  slot.WithIndex([&](Index& live, Spool&) {
    report.mailboxes = live.mailboxes().size();
    if (rebuilt->applied_lsn() != live.applied_lsn()) return;  // already reported
    for (const auto& [id, mb] : live.mailboxes()) {
      const MailboxInfo* other = rebuilt->FindMailbox(id);
      if (other == nullptr) {
        report.problems.push_back(
            absl::StrCat("mailbox ", mb.name, " (", id, ") is in the index but not in the log"));
      } else if (!(other->MailboxDigest() == mb.MailboxDigest()) || other->name != mb.name) {
        report.problems.push_back(
            absl::StrCat("mailbox ", mb.name, " (", id, ") differs between index and log"));
      }
    }
    for (const auto& [id, mb] : rebuilt->mailboxes()) {
      if (live.FindMailbox(id) == nullptr) {
        report.problems.push_back(
            absl::StrCat("mailbox ", mb.name, " (", id, ") is in the log but not in the index"));
      }
    }
    if (!(rebuilt->slot_digest() == live.slot_digest()) && report.problems.empty()) {
      report.problems.push_back("slot digest differs between index and log (quotas?)");
    }
  });
  rebuilt.reset();
  cleanup_scratch();

  // The slot digest kept in the index's meta table (what a check's fast
  // path compares) must be the sum over the index's mailboxes.
  {
    ASSIGN_OR_RETURN(std::unique_ptr<Index> view, Index::OpenReadOnly(paths.index_file()));
    const std::optional<Digest> stored = view->stored_slot_digest();
    if (stored && !(*stored == view->slot_digest())) {
      report.problems.push_back(absl::StrCat(
          "index ", paths.index_file(), ": the stored slot digest ", stored->Hex(),
          " is not that of its mailboxes (", view->slot_digest().Hex(),
          "); run `mailctl reconstruct` on the slot"));
    }
  }

  // 3. Every body hashes to its GUID (once the background writer is done).
  // The list is taken under the index lock; the reads happen outside it.
  RETURN_IF_ERROR(slot.FlushBodies());
  struct Blob {
    std::string guid;
    uint64_t size;
    std::optional<BodyLocation> location;
  };
  std::vector<Blob> blobs;
  const Spool* spool = nullptr;  // thread-safe for reads (pread)
  RETURN_IF_ERROR(slot.WithIndex([&](Index& live, Spool& s) {
    spool = &s;
    return live.ForEachBlob([&](const std::string& guid, uint64_t size,
                                const std::optional<BodyLocation>& loc) {
      blobs.push_back({guid, size, loc});
      return absl::OkStatus();
    });
  }));
  const absl::Time start = absl::Now();
  for (const Blob& b : blobs) {
    ++report.blobs;
    if (!b.location) {
      report.bad_bodies.push_back(
          {b.guid, absl::StrCat("body ", GuidHex(b.guid), " missing: it is not in the spool")});
      continue;
    }
    absl::StatusOr<std::string> body = spool->Read(b.guid, *b.location);
    if (!body.ok()) {
      report.bad_bodies.push_back({b.guid, std::string(body.status().message())});
      continue;
    }
    report.bytes += body->size();
    if (body->size() != b.size || Sha1(*body) != b.guid) {
      report.bad_bodies.push_back(
          {b.guid, absl::StrCat("body ", GuidHex(b.guid), " in pack ",
                                spool->PackPath(b.location->pack), " offset ",
                                b.location->offset, " does not hash to its GUID (damaged)")});
    }
    if (options.max_bytes_per_second > 0) {
      // Pace: never ahead of the allowed rate since the start.
      const absl::Time due =
          start + absl::Seconds(static_cast<double>(report.bytes) / options.max_bytes_per_second);
      if (const absl::Time now = absl::Now(); due > now) absl::SleepFor(due - now);
    }
  }
  return report;
}

absl::StatusOr<RecoveryReport> ReconstructIndex(const SlotPaths& paths,
                                                const SlotOptions& options) {
  // Open checks the identity and takes the slot's lock before it deletes
  // the index: a slot another process has open keeps its index.
  SlotOptions rebuild = options;
  rebuild.discard_index = true;
  ASSIGN_OR_RETURN(auto slot, Slot::Open(paths, rebuild));
  RecoveryReport report = slot->recovery();
  RETURN_IF_ERROR(slot->AdminNote(
      "reconstruct", absl::StrCat("index rebuilt from ", report.records_replayed, " records")));
  return report;
}

}  // namespace mailrepl
