#include "store/salvage_file.h"

#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "store/slot.h"
#include "store/spool.h"

namespace mailrepl {
namespace {

constexpr absl::string_view kSalvageSuffix = ".salvage";
constexpr absl::string_view kDoneSuffix = ".done";

void AddEntry(RecordType type, const google::protobuf::MessageLite& payload, std::string* out) {
  LogRecord r;
  r.type = type;
  r.payload = payload.SerializeAsString();
  EncodeRecord(r, out);
}

}  // namespace

std::string SalvageDir(const std::string& slot_root) { return slot_root + "/salvage"; }

std::string SalvageFilePath(const std::string& dir, const salvagepb::SalvageHeader& header) {
  return absl::StrFormat("%s/%020d-%020d%s", dir, header.from_lsn(), header.to_lsn(),
                         kSalvageSuffix);
}

std::string SalvageProgressPath(const std::string& salvage_path) {
  std::string p = salvage_path;
  if (absl::EndsWith(p, kSalvageSuffix)) p.resize(p.size() - kSalvageSuffix.size());
  return p + ".progress";
}

absl::StatusOr<std::vector<std::string>> PendingSalvageFiles(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return ErrnoStatus(errno, "open directory", dir);
  }
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (absl::EndsWith(name, kSalvageSuffix)) out.push_back(absl::StrCat(dir, "/", name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<SalvageSet> CollectSalvage(Slot& slot, uint64_t fork_lsn, uint64_t master_epoch) {
  SalvageSet set;
  salvagepb::SalvageHeader& h = set.header;
  const SlotIdentity& id = slot.identity();
  h.set_cluster_id(id.cluster_id);
  h.set_store_id(id.store_id);
  h.set_slot_id(id.slot_id);
  h.set_fork_lsn(fork_lsn);
  h.set_from_lsn(fork_lsn + 1);
  h.set_to_lsn(slot.last_lsn());
  h.set_epoch(slot.epoch());
  h.set_master_epoch(master_epoch);
  h.set_created_unix(absl::ToUnixSeconds(absl::Now()));
  if (h.to_lsn() <= fork_lsn) return set;  // nothing past the fork point
  if (slot.log_start_lsn() > fork_lsn + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "slot ", slot.paths().root, " no longer holds LSN ", fork_lsn + 1,
        " in its log (retention dropped it below LSN ", slot.log_start_lsn(),
        "): the records past the fork point cannot be salvaged; copy the slot directory away "
        "before it is rewound"));
  }
  // The Append records past the fork point, in LSN order.
  struct Appended {
    std::string mailbox_id;
    uint32_t uid;
    uint64_t lsn;
  };
  std::vector<Appended> appended;
  std::map<std::string, uint32_t> fork_uid;  // mailbox id -> last UID before the fork
  ASSIGN_OR_RETURN(LogReader reader,
                   LogReader::Open(slot.paths().log_dir(), fork_lsn + 1, /*recovery=*/false));
  for (;;) {
    LogRecord r;
    ASSIGN_OR_RETURN(bool more, reader.Next(&r));
    if (!more || r.lsn > h.to_lsn()) break;
    if (r.type != RecordType::kAppend) continue;
    logpb::Append p;
    if (!p.ParseFromString(r.payload)) {
      return absl::DataLossError(absl::StrCat("change log ", reader.current_path(),
                                              ": append record LSN ", r.lsn, " does not parse"));
    }
    // UIDs are assigned last UID + 1: the first one past the fork point
    // tells the mailbox's last UID at the fork point.
    fork_uid.emplace(p.mailbox_id(), p.uid() - 1);
    appended.push_back({p.mailbox_id(), p.uid(), r.lsn});
  }
  // Their state now (flags changed, expunged, mailbox renamed or deleted).
  absl::Status read = slot.WithIndex([&](Index& ix, Spool&) -> absl::Status {
    for (const Appended& a : appended) {
      const MailboxInfo* mb = ix.FindMailbox(a.mailbox_id);
      if (mb == nullptr) continue;  // deleted since
      ASSIGN_OR_RETURN(std::optional<MessageInfo> m, ix.GetMessage(a.mailbox_id, a.uid));
      if (!m || m->expunged) continue;
      salvagepb::SalvageMessage& s = set.messages.emplace_back();
      s.set_mailbox(mb->name);
      s.set_guid(m->guid);
      for (const std::string& f : m->flags) s.add_flags(f);
      s.set_internal_date(m->internal_date);
      s.set_lsn(a.lsn);
      s.set_uid(a.uid);
      s.set_fork_uid(fork_uid[a.mailbox_id]);
    }
    return absl::OkStatus();
  });
  RETURN_IF_ERROR(read);
  for (salvagepb::SalvageMessage& s : set.messages) {
    ASSIGN_OR_RETURN(*s.mutable_body(), slot.ReadBlob(s.guid()));
  }
  return set;
}

absl::Status WriteSalvageFile(const std::string& path, const SalvageSet& set) {
  std::string data;
  AddEntry(RecordType::kSalvageHeader, set.header, &data);
  for (const salvagepb::SalvageMessage& m : set.messages) {
    AddEntry(RecordType::kSalvageMessage, m, &data);
  }
  salvagepb::SalvageTrailer t;
  t.set_messages(static_cast<uint32_t>(set.messages.size()));
  AddEntry(RecordType::kSalvageTrailer, t, &data);
  const std::string dir = path.substr(0, path.find_last_of('/'));
  RETURN_IF_ERROR(MakeDirs(dir));
  return WriteFileAtomically(path, data);
}

absl::StatusOr<SalvageSet> ReadSalvageFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string data, ReadFile(path));
  return ParseSalvageFile(data, path);
}

absl::StatusOr<SalvageSet> ParseSalvageFile(absl::string_view data, const std::string& path) {
  SalvageSet set;
  absl::string_view rest = data;
  size_t offset = 0;
  bool header = false;
  auto damaged = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("salvage file ", path, " at offset ", offset, ": ",
                                            why, "; nothing was appended from it: move it "
                                            "away to let the other salvages go on"));
  };
  while (!rest.empty()) {
    LogRecord r;
    size_t consumed = 0;
    if (DecodeRecord(rest, &r, &consumed) != DecodeStatus::kOk) {
      return damaged("damaged or truncated entry");
    }
    switch (r.type) {
      case RecordType::kSalvageHeader:
        if (header || !set.header.ParseFromString(r.payload)) return damaged("bad header");
        header = true;
        break;
      case RecordType::kSalvageMessage: {
        if (!header) return damaged("message before the header");
        salvagepb::SalvageMessage& m = set.messages.emplace_back();
        if (!m.ParseFromString(r.payload)) return damaged("message entry does not parse");
        if (Sha1(m.body()) != m.guid()) return damaged("message body does not hash to its GUID");
        break;
      }
      case RecordType::kSalvageTrailer: {
        salvagepb::SalvageTrailer t;
        if (!header || !t.ParseFromString(r.payload)) return damaged("bad trailer");
        if (t.messages() != set.messages.size()) {
          return damaged(absl::StrCat("trailer counts ", t.messages(), " messages, the file holds ",
                                      set.messages.size()));
        }
        if (consumed != rest.size()) return damaged("data after the trailer");
        return set;
      }
      default:
        return damaged(absl::StrCat("entry type ", static_cast<int>(r.type),
                                    " does not belong in a salvage file"));
    }
    rest.remove_prefix(consumed);
    offset += consumed;
  }
  return damaged("no trailer (incomplete file)");
}

absl::StatusOr<salvagepb::SalvageProgress> ReadSalvageProgress(const std::string& salvage_path) {
  salvagepb::SalvageProgress p;
  const std::string path = SalvageProgressPath(salvage_path);
  if (::access(path.c_str(), F_OK) != 0) return p;
  ASSIGN_OR_RETURN(std::string data, ReadFile(path));
  if (!p.ParseFromString(data)) {
    return absl::DataLossError(absl::StrCat(
        "salvage progress file ", path,
        " does not parse; delete it to start the salvage over (no message is appended twice)"));
  }
  return p;
}

absl::Status WriteSalvageProgress(const std::string& salvage_path,
                                  const salvagepb::SalvageProgress& progress) {
  return WriteFileAtomically(SalvageProgressPath(salvage_path), progress.SerializeAsString());
}

absl::Status MarkSalvageDone(const std::string& salvage_path) {
  std::string done = salvage_path;
  if (absl::EndsWith(done, kSalvageSuffix)) done.resize(done.size() - kSalvageSuffix.size());
  done.append(kDoneSuffix.data(), kDoneSuffix.size());
  if (::rename(salvage_path.c_str(), done.c_str()) != 0) {
    return ErrnoStatus(errno, "rename to " + done, salvage_path);
  }
  const std::string progress = SalvageProgressPath(salvage_path);
  if (::unlink(progress.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "remove", progress);
  }
  return SyncDir(salvage_path.substr(0, salvage_path.find_last_of('/')));
}

}  // namespace mailrepl
