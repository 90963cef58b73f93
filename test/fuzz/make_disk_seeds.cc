// Writes the seed corpora of the on-disk decoders' fuzzers
// (log_record_fuzzer, log_segment_fuzzer, snapshot_fuzzer, salvage_fuzzer,
// pack_fuzzer) from what the project's own writers produce: a small slot's
// change log (LogWriter), its exported and base snapshots (WriteSnapshot),
// a salvage file (CollectSalvage, WriteSalvageFile) and spool packs
// (Spool::Append), plus the edge cases the tests know (test/log_test.cc,
// slot_test.cc, salvage_test.cc): torn tails, zeros ahead, damage
// mid-log, a sealed segment cut short, a missing segment, flipped bytes,
// truncation, a wrong trailer count.
//
//   flock /tmp/mr-build.lock cmake --build build-fuzz --target make_disk_seeds
//   build-fuzz/bin/make_disk_seeds test/fuzz/corpus
//
// Each seed is a control byte (see each fuzzer's header) and the bytes.
// Mailbox ids and dates differ from run to run; the shapes do not.
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/log.h"
#include "proto/log.pb.h"
#include "proto/salvage.pb.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "store/salvage_file.h"
#include "store/slot.h"
#include "store/spool.h"

namespace mailrepl {
namespace {

void Must(const absl::Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(absl::StrCat(what, ": ", s.ToString()));
}
template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  Must(v.status(), what);
  return std::move(*v);
}

std::string Slurp(const std::string& path) { return Must(ReadFile(path), "read"); }

std::string Body(int n) {
  return absl::StrCat("From: a@example.test\r\nSubject: seed ", n, "\r\n\r\nhello ", n, "\r\n");
}

class Out {
 public:
  explicit Out(std::string root) : root_(std::move(root)) {}
  void Put(const std::string& fuzzer, const std::string& name, uint8_t control,
           const std::string& bytes) {
    const std::string dir = root_ + "/" + fuzzer;
    std::filesystem::create_directories(dir);
    std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
    f.put(static_cast<char>(control));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("write " + dir + "/" + name);
    std::cout << fuzzer << "/" << name << " " << bytes.size() + 1 << " bytes\n";
  }

 private:
  std::string root_;
};

std::string Encode(const LogRecord& r) {
  std::string out;
  EncodeRecord(r, &out);
  return out;
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

struct Log {
  std::vector<LogRecord> records;
  std::vector<std::string> segments;               // cut at the end of their records
  std::vector<std::vector<uint64_t>> record_ends;  // per segment
};

// The records and segments of a slot's log, each segment cut where its
// records end (the zeros the writer keeps ahead are added back by seeds
// that want them).
Log ReadLog(const std::string& log_dir) {
  Log log;
  LogReader reader = Must(LogReader::Open(log_dir, 1, /*recovery=*/false), "open log");
  std::map<std::string, uint64_t> ends;
  std::vector<std::string> order;
  std::map<std::string, std::vector<uint64_t>> record_ends;
  for (;;) {
    LogRecord r;
    if (!Must(reader.Next(&r), "read log")) break;
    if (!ends.contains(reader.current_path())) order.push_back(reader.current_path());
    ends[reader.current_path()] = reader.end_offset();
    record_ends[reader.current_path()].push_back(reader.end_offset());
    log.records.push_back(std::move(r));
  }
  for (const std::string& path : order) {
    log.segments.push_back(Slurp(path).substr(0, ends[path]));
    log.record_ends.push_back(record_ends[path]);
  }
  return log;
}

class Scratch {
 public:
  Scratch() {
    std::string tmpl = "/tmp/mailrepl-seeds-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::unique_ptr<Slot> NewSlot(const std::string& dir, uint64_t segment_bytes) {
  Must(Slot::Init(SlotPaths::Under(dir), {"test", 1, 1, 1700000000}), "init slot");
  SlotOptions options;
  options.segment_bytes = segment_bytes;
  return Must(Slot::Open(SlotPaths::Under(dir), options), "open slot");
}

void Run(const std::string& root) {
  Out out(root);
  Scratch scratch;

  // A slot that uses every replicated record type, and both local ones.
  const std::string dir = scratch.Sub("slot");
  auto slot = NewSlot(dir, 600);
  Must(slot->CreateMailbox("user/alice").status(), "create");
  for (int i = 0; i < 3; ++i) {
    Must(slot->Append({.mailbox = "user/alice", .body = Body(i), .flags = {"\\Seen"}}).status(),
         "append");
  }
  Must(slot->CreateMailbox("user/alice/Work").status(), "create");
  Must(slot->Copy("user/alice", {1}, "user/alice/Work").status(), "copy");
  Must(slot->SetFlags("user/alice", {2}, FlagOp::kAdd, {"\\Flagged", "$Label1"}), "flags");
  Must(slot->Expunge("user/alice", {3}), "expunge");
  Must(slot->SetQuota("alice", 1 << 20, 100), "quota");
  Must(slot->BeginEpoch(2), "epoch");
  Must(slot->RenameMailbox("user/alice/Work", "user/alice/Projects"), "rename");
  Must(slot->AdminNote("seed", "made by make_disk_seeds"), "admin note");
  {
    // A repair that restates user/alice as it is.
    const MailboxInfo mb = Must(slot->GetMailbox("user/alice"), "get mailbox");
    logpb::RepairMailbox p;
    p.set_mailbox_id(mb.id);
    p.mutable_mailbox()->set_mailbox_id(mb.id);
    p.mutable_mailbox()->set_name(mb.name);
    p.mutable_mailbox()->set_uidvalidity(mb.uidvalidity);
    p.mutable_mailbox()->set_last_uid(mb.last_uid);
    p.mutable_mailbox()->set_highest_modseq(mb.highest_modseq);
    for (const MessageInfo& m : Must(slot->ListMessages("user/alice", true), "list")) {
      logpb::SnapshotMessage* s = p.add_messages();
      s->set_mailbox_id(mb.id);
      s->set_uid(m.uid);
      s->set_guid(m.guid);
      s->set_size(m.size);
      s->set_internal_date(m.internal_date);
      for (const auto& f : m.flags) s->add_flags(f);
      s->set_modseq(m.modseq);
      s->set_expunged(m.expunged);
    }
    p.set_reason("seed");
    Must(slot->RepairMailbox(p.SerializeAsString(), {}), "repair");
  }
  Must(slot->Append({.mailbox = "user/alice/Projects", .body = Body(9)}).status(), "append");
  Must(slot->DeleteMailbox("user/alice/Projects"), "delete");
  Must(slot->FlushBodies(), "flush");

  const Log log = ReadLog(SlotPaths::Under(dir).log_dir());
  if (log.segments.size() < 3) {
    throw std::runtime_error(absl::StrCat("expected several segments, got ", log.segments.size(),
                                          " with ", log.records.size(), " records"));
  }

  // --- log_record_fuzzer: control bit 0 repairs CRCs, bit 1 applies, bit 2 quarantines.
  {
    const std::string f = "log_record_fuzzer";
    std::string all;
    for (const LogRecord& r : log.records) EncodeRecord(r, &all);
    out.Put(f, "whole_log_applied", 0x03, all);
    out.Put(f, "whole_log_quarantine", 0x07, all);
    std::map<RecordType, bool> seen;
    for (const LogRecord& r : log.records) {
      if (seen[r.type]) continue;
      seen[r.type] = true;
      out.Put(f, absl::StrCat("type_", static_cast<int>(r.type), "_", RecordTypeName(r.type)), 0x00,
              Encode(r));
    }
    // docs/formats.md, "Worked example".
    logpb::BeginEpoch e;
    e.set_epoch(2);
    e.set_previous_epoch(1);
    const std::string example = Encode({5, 2, RecordType::kBeginEpoch, e.SerializeAsString()});
    out.Put(f, "docs_worked_example", 0x00, example);
    // test/log_test.cc: cut short, a flipped byte, a length over the limit.
    const std::string note = Encode({1, 1, RecordType::kAdminNote, "some payload"});
    out.Put(f, "cut_short", 0x00, note.substr(0, note.size() - 1));
    std::string flipped = note;
    flipped[30] ^= 0x01;
    out.Put(f, "flipped_byte", 0x00, flipped);
    std::string huge = note;
    huge[7] = '\x7f';
    out.Put(f, "length_over_limit", 0x00, huge);
  }

  // --- log_segment_fuzzer: segments joined by "%%SEGMENT%%"; bit 0 repairs CRCs.
  {
    const std::string f = "log_segment_fuzzer";
    const std::string sep = "%%SEGMENT%%";
    out.Put(f, "whole_log", 0x00, Join(log.segments, sep));
    out.Put(f, "whole_log_from_lsn_5", 0x0a, Join(log.segments, sep));
    std::vector<std::string> segs = log.segments;
    std::string& last = segs.back();
    const uint64_t next = log.records.back().lsn + 1;
    const std::string torn = Encode({next, 2, RecordType::kAdminNote, std::string(200, 'x')});
    auto with_last = [&](std::string bytes) {
      std::vector<std::string> v = segs;
      v.back() = std::move(bytes);
      return Join(v, sep);
    };
    // "a torn tail is truncated on open, reported, and the slot goes on"
    out.Put(f, "torn_tail", 0x00, with_last(last + torn.substr(0, 60)));
    // "the zeros the writer keeps ahead of its records end the log cleanly"
    out.Put(f, "zeros_ahead", 0x00, with_last(last + std::string(512, '\0')));
    // "a record torn over the zeros ahead is a torn tail"
    out.Put(f, "torn_over_zeros", 0x00,
            with_last(last + torn.substr(0, 60) + std::string(452, '\0')));
    {
      // Damage in the middle of a last segment: the first one alone.
      const std::string& one = log.segments.front();
      const std::vector<uint64_t>& e = log.record_ends.front();
      if (e.size() < 3) throw std::runtime_error("expected 3 records in the first segment");
      // "a record zeroed in the middle of the log refuses the open"
      std::string zeroed = one + std::string(256, '\0');
      for (size_t i = 0; i < kRecordHeaderSize; ++i) zeroed[e[0] + i] = '\0';
      out.Put(f, "zeroed_mid_log", 0x00, zeroed);
      // "a flipped byte in the middle of the log refuses the open"
      std::string flipped = one;
      flipped[e[0] + 30] ^= 0x40;
      out.Put(f, "flipped_mid_log", 0x00, flipped);
      // "a damaged length field mid-log is not mistaken for a torn tail"
      std::string length = one;
      length[e[0] + 6] ^= 0x40;
      out.Put(f, "length_mid_log", 0x00, length);
    }
    // "damage in a sealed segment refuses the open"
    std::vector<std::string> sealed = log.segments;
    sealed[0].resize(sealed[0].size() - 5);
    out.Put(f, "sealed_segment_cut", 0x00, Join(sealed, sep));
    // "a missing segment in the middle of the log is reported as a gap"
    std::vector<std::string> gap = log.segments;
    gap.erase(gap.begin() + 1);
    out.Put(f, "missing_segment", 0x00, Join(gap, sep));
    out.Put(f, "one_segment", 0x01, log.segments.front());
  }

  // --- snapshot_fuzzer: bit 0 CRCs, bit 1 GUIDs, bit 2 trailer, bit 3 expect identity.
  {
    const std::string f = "snapshot_fuzzer";
    const std::string path = scratch.Sub("export.snapshot");
    Must(slot->ExportSnapshot(path), "export");
    const std::string exported = Slurp(path);
    out.Put(f, "exported", 0x00, exported);
    out.Put(f, "exported_expect_identity", 0x08, exported);
    // "a damaged snapshot is refused and leaves the slot empty"
    std::string flipped = exported;
    flipped[flipped.size() / 2] ^= 0x40;
    out.Put(f, "flipped_byte", 0x00, flipped);
    out.Put(f, "cut_short", 0x00, exported.substr(0, exported.size() - 10));
    // The base snapshot log retention writes (no bodies).
    Must(slot->AdminNote("roll", ""), "note");
    Must(slot->DropLogBelow(slot->last_lsn() + 1).status(), "retention");
    out.Put(f, "base_snapshot", 0x00, Slurp(SlotPaths::Under(dir).base_snapshot()));
    // An empty slot's.
    auto empty = NewSlot(scratch.Sub("empty"), 1 << 20);
    const std::string empty_path = scratch.Sub("empty.snapshot");
    Must(empty->ExportSnapshot(empty_path), "export empty");
    out.Put(f, "empty_slot", 0x00, Slurp(empty_path));
  }

  // --- salvage_fuzzer: bit 0 CRCs, bit 1 GUIDs.
  {
    const std::string f = "salvage_fuzzer";
    const std::string sdir = scratch.Sub("diverged");
    auto d = NewSlot(sdir, 1 << 20);
    Must(d->CreateMailbox("user/alice").status(), "create");
    for (int i = 0; i < 2; ++i) {
      Must(d->Append({.mailbox = "user/alice", .body = Body(i)}).status(), "append");
    }
    const uint64_t fork = d->last_lsn();
    Must(d->Append({.mailbox = "user/alice", .body = Body(10), .flags = {"\\Seen"}}).status(),
         "append");
    const uint32_t gone =
        Must(d->Append({.mailbox = "user/alice", .body = Body(11)}), "append").uid;
    Must(d->Expunge("user/alice", {gone}), "expunge");
    Must(d->CreateMailbox("user/alice/Later").status(), "create");
    Must(d->Append({.mailbox = "user/alice/Later", .body = Body(12)}).status(), "append");
    SalvageSet set = Must(CollectSalvage(*d, fork, 7), "collect");
    const std::string path = SalvageFilePath(SalvageDir(sdir), set.header);
    Must(WriteSalvageFile(path, set), "write salvage");
    const std::string bytes = Slurp(path);
    out.Put(f, "salvage", 0x00, bytes);
    // salvage_test.cc: "damage, a missing trailer or a wrong count is refused"
    std::string flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x40;
    out.Put(f, "flipped_byte", 0x00, flipped);
    out.Put(f, "cut_short", 0x00, bytes.substr(0, bytes.size() - 10));
    {
      SalvageSet one;
      one.header = set.header;
      one.messages.push_back(set.messages.at(0));
      const std::string p1 = scratch.Sub("one.salvage");
      Must(WriteSalvageFile(p1, one), "write");
      std::string wrong = Slurp(p1);
      // The trailer's count, re-encoded as 2.
      LogRecord r;
      size_t consumed = 0, pos = 0;
      std::string rebuilt;
      while (DecodeRecord(absl::string_view(wrong).substr(pos), &r, &consumed) ==
             DecodeStatus::kOk) {
        if (r.type == RecordType::kSalvageTrailer) {
          salvagepb::SalvageTrailer t;
          t.set_messages(2);
          r.payload = t.SerializeAsString();
        }
        EncodeRecord(r, &rebuilt);
        pos += consumed;
      }
      out.Put(f, "trailer_counts_two", 0x00, rebuilt);
    }
    SalvageSet none = Must(CollectSalvage(*d, d->last_lsn(), 7), "collect none");
    const std::string p0 = scratch.Sub("none.salvage");
    Must(WriteSalvageFile(p0, none), "write");
    out.Put(f, "no_messages", 0x00, Slurp(p0));
  }

  // --- pack_fuzzer: packs joined by "%%PACK%%"; bit 0 CRCs, bit 1 GUIDs.
  {
    const std::string f = "pack_fuzzer";
    const std::string sep = "%%PACK%%";
    // The slot's own pack (bodies written by its BodyWriter).
    const std::string packs_dir = SlotPaths::Under(dir).spool + "/packs";
    std::vector<std::string> slot_packs;
    for (uint32_t n : Must(ListPacks(packs_dir), "list packs")) {
      slot_packs.push_back(Slurp(absl::StrFormat("%s/%08u.pack", packs_dir, n)));
    }
    out.Put(f, "slot_packs", 0x00, Join(slot_packs, sep));
    // Several small packs from the Spool itself.
    Spool spool(scratch.Sub("spool"), 200);
    Must(spool.Init(), "spool init");
    Must(spool.OpenForAppend().status(), "spool open");
    for (int i = 0; i < 6; ++i) Must(spool.Append(Sha1(Body(i)), Body(i)).status(), "append");
    std::vector<std::string> packs;
    for (uint32_t n : Must(ListPacks(spool.packs_dir()), "list packs")) {
      packs.push_back(Slurp(spool.PackPath(n)));
    }
    out.Put(f, "small_packs", 0x00, Join(packs, sep));
    // docs/formats.md: the 5-byte body "hello".
    Spool hello(scratch.Sub("hello"));
    Must(hello.Init(), "init");
    Must(hello.Append(Sha1("hello"), "hello").status(), "append");
    const std::string hello_pack = Slurp(hello.PackPath(1));
    out.Put(f, "docs_hello", 0x00, hello_pack);
    // log_test.cc: "a torn pack tail is cut off at open": the last entry
    // cut in its body, then a page of zeros the file system allocated.
    const std::string body = Body(1);
    Spool second(scratch.Sub("second"));
    Must(second.Init(), "init");
    Must(second.Append(Sha1("hello"), "hello").status(), "append");
    Must(second.Append(Sha1(body), body).status(), "append");
    const std::string both = Slurp(second.PackPath(1));
    out.Put(f, "torn_tail", 0x00,
            both.substr(0, hello_pack.size() + kPackEntryHeaderSize + 10) + std::string(512, '\0'));
    // "damage in the middle of a pack is not mistaken for a torn tail"
    std::string damaged = both;
    damaged[1] ^= 0x40;
    out.Put(f, "damaged_first_entry", 0x00, damaged);
    std::string crc = both;
    crc[hello_pack.size() + kPackEntryHeaderSize + 3] ^= 0x01;
    out.Put(f, "bad_crc_last_entry", 0x00, crc);
  }
}

}  // namespace
}  // namespace mailrepl

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_disk_seeds CORPUS_DIR  (test/fuzz/corpus)\n";
    return 2;
  }
  mailrepl::SetLogQuiet(true);
  try {
    mailrepl::Run(argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "make_disk_seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
