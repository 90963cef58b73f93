// The slot administration commands of mailctl: init, verify, digest,
// dump-log, reconstruct, snapshot, retain, checkpoint.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "proto/log.pb.h"
#include "store/log_reader.h"
#include "store/spool.h"
#include "store/verify.h"
#include "tools/mailctl_commands.h"
#include "tools/mailctl_json.h"

namespace mailrepl {
namespace {

// Items of a list shown in a dump-log text line before "+N more".
constexpr size_t kTextListItems = 16;

std::string SlotSummary(Slot& slot) {
  return absl::StrCat("last LSN ", slot.last_lsn(), ", ",
                      slot.ListMailboxes().size(), " mailboxes, slot digest ",
                      slot.SlotDigest().Hex());
}

// A value for a key=value text field: bare when it is plain, else quoted
// with C escapes (names may hold spaces, quotes or non-ASCII bytes).
std::string TextValue(absl::string_view v) {
  for (char c : v) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F || c == '"' || c == '=') {
      return absl::StrCat("\"", absl::CHexEscape(v), "\"");
    }
  }
  return v.empty() ? "\"\"" : std::string(v);
}

template <typename T>
std::string TextList(const std::vector<T>& items) {
  std::vector<std::string> shown;
  for (size_t i = 0; i < items.size() && i < kTextListItems; ++i) {
    shown.push_back(absl::StrCat(items[i]));
  }
  std::string out = absl::StrJoin(shown, ",");
  if (items.size() > kTextListItems) {
    absl::StrAppend(&out, ",...(+", items.size() - kTextListItems, " more)");
  }
  return out;
}

// The payload of one record as text fields and as JSON fields.
class Summary {
 public:
  void Str(absl::string_view key, absl::string_view v) {
    absl::StrAppend(&text_, " ", key, "=", TextValue(v));
    json_.Str(key, v);
  }
  void Num(absl::string_view key, uint64_t v) {
    absl::StrAppend(&text_, " ", key, "=", v);
    json_.Num(key, v);
  }
  void Int(absl::string_view key, int64_t v) {
    absl::StrAppend(&text_, " ", key, "=", v);
    json_.Int(key, v);
  }
  void Bool(absl::string_view key, bool v) {
    absl::StrAppend(&text_, " ", key, "=", v ? "true" : "false");
    json_.Bool(key, v);
  }
  void Strings(absl::string_view key, const std::vector<std::string>& v) {
    std::vector<std::string> shown;
    for (const std::string& s : v) shown.push_back(TextValue(s));
    absl::StrAppend(&text_, " ", key, "=", v.empty() ? "-" : TextList(shown));
    json_.Raw(key, JsonStringArray(v));
  }
  void Uids(absl::string_view key, const std::vector<uint32_t>& v) {
    absl::StrAppend(&text_, " ", key, "=", TextList(v));
    std::vector<std::string> nums;
    for (uint32_t u : v) nums.push_back(absl::StrCat(u));
    json_.Raw(key, JsonArray(nums));
  }
  // JSON only (text shows it some other way).
  void JsonRaw(absl::string_view key, absl::string_view v) {
    json_.Raw(key, v);
  }
  void TextOnly(absl::string_view text) { absl::StrAppend(&text_, " ", text); }

  const std::string& text() const { return text_; }
  JsonObject& json() { return json_; }

 private:
  std::string text_;
  JsonObject json_;
};

std::vector<std::string> ToVector(
    const google::protobuf::RepeatedPtrField<std::string>& f) {
  return {f.begin(), f.end()};
}

// Fills s from r's payload; false if the payload does not parse.
bool Summarize(const LogRecord& r, Summary& s) {
  switch (r.type) {
    case RecordType::kCreateMailbox: {
      logpb::CreateMailbox p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Str("name", p.name());
      s.Num("uidvalidity", p.uidvalidity());
      return true;
    }
    case RecordType::kRenameMailbox: {
      logpb::RenameMailbox p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Str("old_name", p.old_name());
      s.Str("new_name", p.new_name());
      return true;
    }
    case RecordType::kDeleteMailbox: {
      logpb::DeleteMailbox p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Str("name", p.name());
      return true;
    }
    case RecordType::kAppend: {
      logpb::Append p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Num("uid", p.uid());
      s.Str("guid", GuidHex(p.guid()));
      s.Num("size", p.size());
      s.Int("internal_date", p.internal_date());
      s.Strings("flags", ToVector(p.flags()));
      s.Num("modseq", p.modseq());
      s.Bool("has_body", p.has_body());
      if (p.has_body()) s.Num("body_bytes", p.body().size());
      return true;
    }
    case RecordType::kSetFlags: {
      logpb::SetFlags p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Num("modseq", p.modseq());
      std::vector<std::string> text, json;
      for (const auto& c : p.changes()) {
        std::vector<std::string> flags = ToVector(c.flags());
        std::vector<std::string> shown;
        for (const std::string& f : flags) shown.push_back(TextValue(f));
        text.push_back(absl::StrCat(
            c.uid(), ":", flags.empty() ? "-" : absl::StrJoin(shown, "+")));
        json.push_back(JsonObject()
                           .Num("uid", c.uid())
                           .Raw("flags", JsonStringArray(flags))
                           .Close());
      }
      s.TextOnly(absl::StrCat("changes=", TextList(text)));
      s.JsonRaw("changes", JsonArray(json));
      return true;
    }
    case RecordType::kExpunge: {
      logpb::Expunge p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Uids("uids", {p.uids().begin(), p.uids().end()});
      s.Num("modseq", p.modseq());
      return true;
    }
    case RecordType::kSetQuota: {
      logpb::SetQuota p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("user", p.user());
      s.Num("storage_limit", p.storage_limit());
      s.Num("message_limit", p.message_limit());
      return true;
    }
    case RecordType::kBeginEpoch: {
      logpb::BeginEpoch p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Num("new_epoch", p.epoch());
      s.Num("previous_epoch", p.previous_epoch());
      return true;
    }
    case RecordType::kAdminNote: {
      logpb::AdminNote p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("operation", p.operation());
      s.Str("detail", p.detail());
      return true;
    }
    case RecordType::kRepairMailbox: {
      logpb::RepairMailbox p;
      if (!p.ParseFromString(r.payload)) return false;
      s.Str("mailbox", p.mailbox_id());
      s.Bool("deleted", p.deleted());
      if (!p.deleted()) {
        s.Str("name", p.mailbox().name());
        s.Num("uidvalidity", p.mailbox().uidvalidity());
        s.Num("last_uid", p.mailbox().last_uid());
        s.Num("highest_modseq", p.mailbox().highest_modseq());
        s.Num("messages", static_cast<uint64_t>(p.messages_size()));
      }
      s.Str("reason", p.reason());
      return true;
    }
    default:
      return false;  // snapshot entry types never belong in the change log
  }
}

// The epoch history in the header of the base snapshot left by log
// retention, if there is one.
absl::StatusOr<std::vector<EpochStart>> BaseSnapshotHistory(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::vector<EpochStart>{};
    return ErrnoStatus(errno, "open base snapshot", path);
  }
  auto read_at = [&](size_t n, std::string* out) {
    out->resize(n);
    ssize_t got = ::pread(fd, out->data(), n, 0);
    return got == static_cast<ssize_t>(n);
  };
  std::string buf;
  LogRecord r;
  size_t consumed = 0;
  bool ok = read_at(kRecordHeaderSize, &buf);
  if (ok) {
    const uint32_t len =
        static_cast<uint8_t>(buf[4]) | static_cast<uint8_t>(buf[5]) << 8 |
        static_cast<uint8_t>(buf[6]) << 16 |
        static_cast<uint32_t>(static_cast<uint8_t>(buf[7])) << 24;
    ok = len <= kMaxRecordPayload && read_at(kRecordHeaderSize + len, &buf) &&
         DecodeRecord(buf, &r, &consumed) == DecodeStatus::kOk;
  }
  ::close(fd);
  logpb::SnapshotHeader h;
  if (!ok || r.type != RecordType::kSnapshotHeader ||
      !h.ParseFromString(r.payload)) {
    return absl::DataLossError(
        absl::StrCat("base snapshot ", path,
                     " offset 0: damaged header; run 'mailctl verify'"));
  }
  std::vector<EpochStart> out;
  for (const auto& e : h.epoch_history())
    out.push_back({e.epoch(), e.first_lsn()});
  return out;
}

// The last segment has bytes after the reader's last record: say whether
// they are zeros ahead of the writer (OK), a torn tail, or damage followed
// by valid records.
absl::Status ClassifyLeftover(const std::string& log_dir,
                              const LogReader& reader, uint64_t file_size) {
  const uint64_t left = file_size - reader.end_offset();
  absl::StatusOr<LogReader> check =
      LogReader::Open(log_dir, 1, /*recovery=*/true);
  absl::Status damage = check.status();
  if (check.ok()) {
    for (;;) {
      LogRecord r;
      absl::StatusOr<bool> more = check->Next(&r);
      if (!more.ok()) {
        damage = more.status();
        break;
      }
      if (!*more) break;
    }
  }
  if (!damage.ok()) return Failed(damage, "dump-log stopped");
  if (check->torn_tail()) {
    return absl::DataLossError(absl::StrCat(
        "dump-log: change log ", check->torn_tail()->path, " offset ",
        check->torn_tail()->offset, ": torn tail of ",
        check->torn_tail()->bytes_dropped,
        " bytes (an append cut short by a crash; the next open truncates it)"));
  }
  // Recovery reads to the same end: the rest is the zeros the writer keeps
  // ahead of its records (docs/formats.md, "Segments").
  if (check->current_path() == reader.current_path() &&
      check->end_offset() == reader.end_offset()) {
    return absl::OkStatus();
  }
  return absl::DataLossError(
      absl::StrCat("dump-log: change log ", reader.current_path(), " offset ",
                   reader.end_offset(), ": ", left,
                   " bytes are not valid records; run 'mailctl verify'"));
}

}  // namespace

absl::Status RunInit(CommandContext& ctx) {
  const CommandLine& args = *ctx.args;
  SlotIdentity id;
  id.cluster_id =
      args.Get("--cluster-id") ? *args.Get("--cluster-id") : "local";
  if (!args.Has("--store-id") || !args.Has("--slot-id")) {
    return UsageError("init needs --store-id N and --slot-id N");
  }
  ASSIGN_OR_RETURN(id.store_id,
                   ParseUint64("--store-id", *args.Get("--store-id")));
  ASSIGN_OR_RETURN(id.slot_id,
                   ParseUint64("--slot-id", *args.Get("--slot-id")));
  if (id.store_id == 0 || id.slot_id == 0) {
    return UsageError("--store-id and --slot-id must be at least 1");
  }
  id.created_unix = absl::ToUnixSeconds(absl::Now());
  absl::Status s = Slot::Init(ctx.paths, id);
  if (!s.ok()) {
    return Failed(s, absl::StrCat("init slot ", ctx.paths.root),
                  s.code() == absl::StatusCode::kAlreadyExists
                      ? "an existing slot is never re-initialized; choose "
                        "another directory"
                      : "");
  }
  Print(ctx, absl::StrCat("initialized slot ", ctx.paths.root,
                          "\ncluster_id=", id.cluster_id,
                          "\nstore_id=", id.store_id, "\nslot_id=", id.slot_id,
                          "\ncreated_unix=", id.created_unix, "\n"));
  return absl::OkStatus();
}

absl::Status RunVerify(CommandContext& ctx) {
  const std::string& root = ctx.paths.root;
  absl::StatusOr<std::unique_ptr<Slot>> slot =
      Slot::Open(ctx.paths, ctx.options);
  if (!slot.ok()) {
    if (slot.status().code() == absl::StatusCode::kDataLoss) {
      // Damage is what verify looks for: report it as found.
      return Failed(slot.status(),
                    absl::StrCat("verify: slot ", root, " is damaged"));
    }
    const std::string what = absl::StrCat("verify: cannot open slot ", root);
    if (slot.status().code() == absl::StatusCode::kUnavailable)
      return Failed(SlotInUseError(), what);
    return CannotRun(Failed(slot.status(), what));
  }
  if (const auto& torn = (*slot)->recovery().torn_tail) {
    Print(ctx, absl::StrCat("note: torn log tail truncated at open: file ",
                            torn->path, " offset ", torn->offset,
                            " bytes_dropped ", torn->bytes_dropped, "\n"));
  }
  absl::StatusOr<VerifyReport> report = VerifySlot(**slot);
  if (!report.ok()) {
    return CannotRun(
        Failed(report.status(),
               absl::StrCat("verify of slot ", root, " could not run")));
  }
  Print(ctx, absl::StrCat("records=", report->records, " blobs=", report->blobs,
                          " mailboxes=", report->mailboxes,
                          " problems=", report->problems.size() + report->bad_bodies.size(),
                          "\n"));
  for (const std::string& p : report->problems)
    Print(ctx, absl::StrCat("problem: ", p, "\n"));
  for (const VerifyReport::BadBody& b : report->bad_bodies)
    Print(ctx, absl::StrCat("problem: ", b.problem, "\n"));
  if (!report->clean()) {
    return absl::DataLossError(absl::StrCat(
        "verify found ", report->problems.size() + report->bad_bodies.size(),
        " problems in slot ", root,
        " (listed on stdout); repair the slot from a replica, or run "
        "'mailctl reconstruct' if only the index differs from the log"));
  }
  Print(ctx, "clean\n");
  return absl::OkStatus();
}

absl::Status RunDumpLog(CommandContext& ctx) {
  const bool json = ctx.args->Has("--json");
  uint64_t from = 1;
  if (const std::string* f = ctx.args->Get("--from")) {
    ASSIGN_OR_RETURN(from, ParseUint64("--from", *f));
  }
  const std::string log_dir = ctx.paths.log_dir();
  // The history before the log's first record, from the base snapshot.
  absl::StatusOr<std::vector<EpochStart>> history =
      BaseSnapshotHistory(ctx.paths.base_snapshot());
  if (!history.ok()) return Failed(history.status(), "dump-log");
  absl::StatusOr<LogReader> reader =
      LogReader::Open(log_dir, from, /*recovery=*/false);
  if (!reader.ok()) {
    return CannotRun(
        Failed(reader.status(), absl::StrCat("dump-log of ", log_dir)));
  }
  uint64_t records = 0, first_lsn = 0, last_lsn = 0, unparseable = 0;
  // Set when the first record read opened a history entry although its
  // epoch may have begun at an earlier LSN that was not read (--from).
  bool first_entry_uncertain = false;
  absl::Status status = absl::OkStatus();
  for (;;) {
    LogRecord r;
    absl::StatusOr<bool> more = reader->Next(&r);
    if (!more.ok()) {
      status = Failed(more.status(), "dump-log stopped");
      break;
    }
    if (!*more) break;
    if (records == 0) {
      first_lsn = r.lsn;
      while (!history->empty() && history->back().first_lsn >= r.lsn)
        history->pop_back();
    }
    if (history->empty() || history->back().epoch != r.epoch) {
      history->push_back({r.epoch, r.lsn});
      if (records == 0) {
        first_entry_uncertain = r.lsn > 1 && r.type != RecordType::kBeginEpoch;
      }
    }
    ++records;
    last_lsn = r.lsn;
    const absl::string_view type = RecordTypeName(r.type);
    Summary s;
    s.json().Num("lsn", r.lsn).Num("epoch", r.epoch).Str("type", type);
    s.json()
        .Num("payload_bytes", r.payload.size())
        .Bool("local", IsLocalRecordType(r.type));
    if (!Summarize(r, s)) {
      ++unparseable;
      s.Str("payload_error", absl::StrCat("unparseable payload of ",
                                          r.payload.size(), " bytes"));
    }
    if (json) {
      Print(ctx, absl::StrCat(s.json().Close(), "\n"));
    } else {
      // A local record repeats the LSN before it and is never replicated.
      Print(ctx, absl::StrCat("lsn=", r.lsn, " epoch=", r.epoch, " ", type,
                              IsLocalRecordType(r.type) ? " (local)" : "",
                              s.text(), "\n"));
    }
  }
  // In non-recovery mode the reader stops quietly at the first bad record of
  // the last segment. When bytes are left over, a recovery-mode reader tells
  // a torn tail from damage followed by valid records.
  if (status.ok() && !reader->current_path().empty()) {
    struct stat st;
    if (::stat(reader->current_path().c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) > reader->end_offset()) {
      status =
          ClassifyLeftover(log_dir, *reader, static_cast<uint64_t>(st.st_size));
    }
  }
  if (status.ok() && unparseable > 0) {
    status = absl::DataLossError(
        absl::StrCat("dump-log: ", unparseable, " records in ", log_dir,
                     " have intact checksums but payloads that do not parse "
                     "(shown with payload_error)"));
  }
  if (json) {
    std::vector<std::string> h;
    for (const EpochStart& e : *history) {
      h.push_back(JsonObject()
                      .Num("epoch", e.epoch)
                      .Num("first_lsn", e.first_lsn)
                      .Close());
    }
    Print(ctx, absl::StrCat(JsonObject()
                                .Num("records", records)
                                .Raw("epoch_history", JsonArray(h))
                                .Close(),
                            "\n"));
  } else {
    Print(ctx, absl::StrCat(records, " records",
                            records ? absl::StrCat(" (LSN ", first_lsn, "..",
                                                   last_lsn, ")")
                                    : "",
                            "\nepoch history:\n"));
    for (const EpochStart& e : *history) {
      const bool uncertain = first_entry_uncertain && e.first_lsn == first_lsn;
      Print(ctx, absl::StrCat("  epoch ", e.epoch, " from LSN ",
                              uncertain ? "<= " : "", e.first_lsn, "\n"));
    }
  }
  return status;
}

absl::Status RunReconstruct(CommandContext& ctx) {
  absl::StatusOr<RecoveryReport> r = ReconstructIndex(ctx.paths, ctx.options);
  if (!r.ok()) {
    const std::string what =
        absl::StrCat("reconstruct index ", ctx.paths.index_file());
    if (r.status().code() == absl::StatusCode::kUnavailable)
      return Failed(SlotInUseError(), what);
    return Failed(r.status(), what);
  }
  Print(ctx, absl::StrCat("reconstructed index ", ctx.paths.index_file(),
                          ": records_replayed=", r->records_replayed,
                          " bodies_restored=", r->bodies_restored,
                          " last_lsn=", r->last_lsn, "\n"));
  if (r->torn_tail) {
    Print(ctx, absl::StrCat("note: torn log tail truncated: file ",
                            r->torn_tail->path, " offset ",
                            r->torn_tail->offset, "\n"));
  }
  return absl::OkStatus();
}

absl::Status RunDigest(CommandContext& ctx) {
  Slot& slot = *ctx.slot;
  std::vector<MailboxInfo> mailboxes = slot.ListMailboxes();
  // Mailboxes whose replicated records stopped applying: their digests are
  // not the master's until a repair.
  std::vector<Quarantine> quarantined = slot.Quarantined();
  if (ctx.args->Has("--json")) {
    std::vector<std::string> rows;
    for (const MailboxInfo& mb : mailboxes) {
      rows.push_back(JsonObject()
                         .Str("name", mb.name)
                         .Str("id", mb.id)
                         .Str("digest", mb.MailboxDigest().Hex())
                         .Close());
    }
    JsonObject o;
    o.Str("slot_digest", slot.SlotDigest().Hex())
        .Num("last_lsn", slot.last_lsn());
    o.Num("epoch", slot.epoch()).Num("log_start_lsn", slot.log_start_lsn());
    o.Raw("mailboxes", JsonArray(rows));
    std::vector<std::string> q_rows;
    for (const Quarantine& q : quarantined) {
      q_rows.push_back(JsonObject()
                           .Str("id", q.mailbox_id)
                           .Str("name", q.name)
                           .Num("lsn", q.lsn)
                           .Str("reason", q.reason)
                           .Close());
    }
    o.Raw("quarantined", JsonArray(q_rows));
    Print(ctx, absl::StrCat(o.Close(), "\n"));
    return absl::OkStatus();
  }
  Print(ctx, absl::StrCat(
                 "slot_digest ", slot.SlotDigest().Hex(), "\nlast_lsn ",
                 slot.last_lsn(), "\nepoch ", slot.epoch(), "\nlog_start_lsn ",
                 slot.log_start_lsn(), "\nmailboxes ", mailboxes.size(), "\n"));
  for (const MailboxInfo& mb : mailboxes) {
    Print(ctx, absl::StrCat(mb.MailboxDigest().Hex(), "  ", mb.id, "  ",
                            mb.name, "\n"));
  }
  for (const Quarantine& q : quarantined) {
    Print(ctx, absl::StrCat("quarantined ", q.mailbox_id, " ", q.name,
                            " since LSN ", q.lsn, ": ", q.reason, "\n"));
  }
  return absl::OkStatus();
}

absl::Status RunSnapshot(CommandContext& ctx) {
  const std::string& verb = ctx.args->positional[0];
  const std::string& file = ctx.args->positional[1];
  if (verb == "export") {
    absl::Status s = ctx.slot->ExportSnapshot(file);
    if (!s.ok()) return Failed(s, absl::StrCat("snapshot export to ", file));
    Print(ctx, absl::StrCat("exported ", SlotSummary(*ctx.slot), " to ", file,
                            "\n"));
    return absl::OkStatus();
  }
  if (verb == "import") {
    absl::Status s = ctx.slot->ImportSnapshot(file);
    if (!s.ok()) {
      return Failed(s,
                    absl::StrCat("snapshot import of ", file, " into slot ",
                                 ctx.paths.root),
                    s.code() == absl::StatusCode::kFailedPrecondition
                        ? "import into a slot just made by 'mailctl init'"
                        : "");
    }
    Print(ctx,
          absl::StrCat("imported ", file, ": ", SlotSummary(*ctx.slot), "\n"));
    return absl::OkStatus();
  }
  return UsageError(
      absl::StrCat("snapshot: unknown action '", verb, "' (export or import)"));
}

absl::Status RunRetain(CommandContext& ctx) {
  const std::string* below = ctx.args->Get("--below");
  if (below == nullptr) return UsageError("retain needs --below LSN");
  ASSIGN_OR_RETURN(uint64_t lsn, ParseUint64("--below", *below));
  absl::StatusOr<int> dropped = ctx.slot->DropLogBelow(lsn);
  if (!dropped.ok()) {
    return Failed(dropped.status(),
                  absl::StrCat("retain: drop log of ", ctx.paths.log_dir(),
                               " below LSN ", lsn));
  }
  Print(ctx, absl::StrCat("dropped ", *dropped,
                          " log segments; the log now starts at LSN ",
                          ctx.slot->log_start_lsn(), "\n"));
  return absl::OkStatus();
}

absl::Status RunCheckpoint(CommandContext& ctx) {
  absl::Status s = ctx.slot->Checkpoint();
  if (!s.ok())
    return Failed(s, absl::StrCat("checkpoint of spool ", ctx.paths.spool));
  Print(ctx,
        absl::StrCat("spool checkpoint at LSN ", ctx.slot->last_lsn(), "\n"));
  return absl::OkStatus();
}

}  // namespace mailrepl
