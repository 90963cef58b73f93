// The change-log format and its corruption policy: a torn tail after a crash
// is truncated and reported; damage anywhere else refuses the open, naming
// the file and the offset.
#include <catch2/catch.hpp>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <optional>
#include <tuple>

#include "absl/strings/escaping.h"

#include "common/crc32c.h"
#include "common/file_util.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "store/verify.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::FileSize;
using testing::AppendBytes;
using testing::FindPackedBody;
using testing::FlipByte;
using testing::PackedBody;
using testing::TruncateFile;
using testing::LastSegment;
using testing::NewSlot;
using testing::ReopenSlot;
using testing::TempDir;
using testing::TestMessage;

// The end offset of every record in the log of the slot in dir.
std::vector<uint64_t> RecordEnds(const std::string& dir) {
  std::vector<uint64_t> ends;
  auto reader = LogReader::Open(dir + "/log", 1, false);
  REQUIRE(reader.ok());
  LogRecord r;
  while (reader->Next(&r).value()) ends.push_back(reader->end_offset());
  return ends;
}

// A slot with one mailbox and n appended messages; returns the per-record
// end offsets of its single segment. zeros_ahead: closes the slot only once
// the writer's background thread has written zeros ahead of the records
// (it starts after the first append).
std::vector<uint64_t> FillSlot(const std::string& dir, int n, bool zeros_ahead = false) {
  {
    auto slot = NewSlot(dir);
    REQUIRE(slot->CreateMailbox("user/u").ok());
    for (int i = 0; i < n; ++i) {
      REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 500)}).ok());
    }
    if (zeros_ahead) {
      REQUIRE(testing::WaitFor([&] { return FileSize(LastSegment(dir)) >= (1u << 20); },
                               absl::Seconds(30)));
    }
  }
  return RecordEnds(dir);
}

// Cuts the zeros the writer keeps ahead of its records off the last
// segment, as a log written without them ends.
void CutZerosAhead(const std::string& seg, uint64_t end) {
  REQUIRE(FileSize(seg) >= end);
  TruncateFile(seg, end);
}

// A slot whose log spans several small segments.
void FillSmallSegments(const std::string& dir, const SlotOptions& small) {
  auto slot = NewSlot(dir, small);
  REQUIRE(slot->CreateMailbox("user/u").ok());
  for (int i = 0; i < 30; ++i) {
    REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 700)}).ok());
  }
}

TEST_CASE("crc32c matches the standard check value", "[log]") {
  CHECK(crc32c::Value("123456789") == 0xe3069283u);
  CHECK(crc32c::Value("") == 0u);
  uint32_t c = crc32c::Value("hello world");
  CHECK(crc32c::Unmask(crc32c::Mask(c)) == c);
  CHECK(crc32c::Mask(c) != c);
}

TEST_CASE("records round-trip through encode and decode", "[log]") {
  LogRecord in{42, 7, RecordType::kAppend, std::string("payload\0bytes", 13)};
  std::string buf;
  EncodeRecord(in, &buf);
  CHECK(buf.size() == kRecordHeaderSize + 13);
  LogRecord out;
  size_t consumed = 0;
  REQUIRE(DecodeRecord(buf, &out, &consumed) == DecodeStatus::kOk);
  CHECK(consumed == buf.size());
  CHECK(out.lsn == 42);
  CHECK(out.epoch == 7);
  CHECK(out.type == RecordType::kAppend);
  CHECK(out.payload == in.payload);
}

TEST_CASE("a record cut short needs more bytes; a flipped byte fails the checksum", "[log]") {
  LogRecord in{1, 1, RecordType::kAdminNote, "some payload"};
  std::string buf;
  EncodeRecord(in, &buf);
  LogRecord out;
  size_t consumed;
  for (size_t cut : {size_t{0}, size_t{10}, kRecordHeaderSize, buf.size() - 1}) {
    CHECK(DecodeRecord(buf.substr(0, cut), &out, &consumed) == DecodeStatus::kNeedMore);
  }
  for (size_t i = 0; i < buf.size(); ++i) {
    if (i >= 4 && i < 8) continue;  // a length change may read as "need more"
    std::string bad = buf;
    bad[i] ^= 0x01;
    INFO("byte " << i);
    CHECK(DecodeRecord(bad, &out, &consumed) == DecodeStatus::kBad);
  }
  std::string huge = buf;
  huge[7] = '\x7f';  // length far over the limit
  CHECK(DecodeRecord(huge, &out, &consumed) == DecodeStatus::kBad);
}

TEST_CASE("a torn tail is truncated on open, reported, and the slot goes on", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 5);
  std::string seg = LastSegment(dir.path());
  CutZerosAhead(seg, ends.back());
  uint64_t full = FileSize(seg);
  // A crash in the middle of writing record 7 (never acknowledged, never applied).
  LogRecord next{7, 0, RecordType::kAdminNote, std::string(200, 'x')};
  std::string encoded;
  EncodeRecord(next, &encoded);
  testing::AppendBytes(seg, encoded.substr(0, 60));
  auto slot = ReopenSlot(dir.path());
  REQUIRE(slot->recovery().torn_tail.has_value());
  CHECK(slot->recovery().torn_tail->offset == full);
  CHECK(slot->recovery().torn_tail->bytes_dropped == 60);
  CHECK(FileSize(seg) == full);
  CHECK(slot->GetMailbox("user/u").value().messages == 5);
  auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(77)});
  REQUIRE(r.ok());
  CHECK(r->uid == 6);
  CHECK(r->lsn == 7);
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("the zeros the writer keeps ahead of its records end the log cleanly, and appends "
          "overwrite them",
          "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 3, /*zeros_ahead=*/true);
  std::string seg = LastSegment(dir.path());
  const uint64_t size = FileSize(seg);
  REQUIRE(size > ends.back());
  auto slot = ReopenSlot(dir.path());
  CHECK_FALSE(slot->recovery().torn_tail.has_value());
  CHECK(slot->GetMailbox("user/u").value().messages == 3);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(10 + i, 500)}).ok());
  }
  slot.reset();
  // The new records follow the old ones at once, inside what were zeros
  // (written after the zeros, a reader would never reach them).
  const std::vector<uint64_t> now = RecordEnds(dir.path());
  REQUIRE(now.size() == ends.size() + 3);
  CHECK(std::equal(ends.begin(), ends.end(), now.begin()));
  CHECK(now.back() < size);
  slot = ReopenSlot(dir.path());
  CHECK_FALSE(slot->recovery().torn_tail.has_value());
  CHECK(slot->GetMailbox("user/u").value().messages == 6);
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("zeros appended after the last record of a log without zeros ahead end it cleanly",
          "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 3);
  std::string seg = LastSegment(dir.path());
  CutZerosAhead(seg, ends.back());
  testing::AppendBytes(seg, std::string(4096, '\0'));  // as a file system may leave them
  auto slot = ReopenSlot(dir.path());
  CHECK_FALSE(slot->recovery().torn_tail.has_value());
  CHECK(slot->GetMailbox("user/u").value().messages == 3);
  auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(77)});
  REQUIRE(r.ok());
  CHECK(r->lsn == 5);
  slot.reset();
  slot = ReopenSlot(dir.path());
  CHECK(slot->GetMailbox("user/u").value().messages == 4);
}

TEST_CASE("a record torn over the zeros ahead is a torn tail", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 4, /*zeros_ahead=*/true);
  std::string seg = LastSegment(dir.path());
  REQUIRE(FileSize(seg) > ends.back() + 200);
  LogRecord next{6, 0, RecordType::kAdminNote, std::string(300, 'x')};
  std::string encoded;
  EncodeRecord(next, &encoded);
  for (size_t i = 0; i < 60; ++i) {
    testing::WriteByteAt(seg, ends.back() + i, encoded[i]);  // a crash 60 bytes in
  }
  auto slot = ReopenSlot(dir.path());
  REQUIRE(slot->recovery().torn_tail.has_value());
  CHECK(slot->recovery().torn_tail->offset == ends.back());
  CHECK(slot->GetMailbox("user/u").value().messages == 4);
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(78)}).ok());
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("a record zeroed in the middle of the log refuses the open", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 6, /*zeros_ahead=*/true);
  std::string seg = LastSegment(dir.path());
  // The whole header of the fourth record reads as zeros ahead, but valid
  // records follow it.
  for (size_t i = 0; i < kRecordHeaderSize; ++i) testing::WriteByteAt(seg, ends[2] + i, '\0');
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), {});
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(slot.status().message()), Catch::Contains(seg));
}

TEST_CASE("a flipped byte in the middle of the log refuses the open, naming file and offset",
          "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 6);
  std::string seg = LastSegment(dir.path());
  const uint64_t size = FileSize(seg);
  FlipByte(seg, ends[2] + 40);  // inside the fourth record
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), {});
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  std::string msg(slot.status().message());
  CHECK_THAT(msg, Catch::Contains(seg));
  CHECK_THAT(msg, Catch::Contains("offset " + std::to_string(ends[2])));
  CHECK(FileSize(seg) == size);  // nothing was truncated
}

TEST_CASE("a damaged length field mid-log is not mistaken for a torn tail", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 6);
  std::string seg = LastSegment(dir.path());
  CutZerosAhead(seg, ends.back());
  FlipByte(seg, ends[1] + 6);  // the length of the third record grows by 4 MiB
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), {});
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  CHECK(FileSize(seg) == ends.back());
}

TEST_CASE("damage in a sealed segment refuses the open", "[log][recovery]") {
  TempDir dir;
  SlotOptions small;
  small.segment_bytes = 4096;
  FillSmallSegments(dir.path(), small);
  auto segs = ListSegments(dir.Sub("log")).value();
  REQUIRE(segs.size() >= 3);
  // The tail of a sealed segment is never a torn tail.
  testing::TruncateFile(segs[0].path, FileSize(segs[0].path) - 5);
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), small);
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(slot.status().message()), Catch::Contains(segs[0].path));
}

TEST_CASE("a missing segment in the middle of the log is reported as a gap", "[log][recovery]") {
  TempDir dir;
  SlotOptions small;
  small.segment_bytes = 4096;
  FillSmallSegments(dir.path(), small);
  auto segs = ListSegments(dir.Sub("log")).value();
  REQUIRE(segs.size() >= 3);
  REQUIRE(::unlink(segs[1].path.c_str()) == 0);
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), small);
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(slot.status().message()), Catch::Contains("LSN"));
}

// What a reader returns: per record its segment file name, end offset and
// LSN; then how it ended.
struct ReadOut {
  std::vector<std::tuple<std::string, uint64_t, uint64_t>> records;
  absl::Status status;
  std::optional<std::tuple<std::string, uint64_t, uint64_t>> torn;
};

ReadOut ReadThrough(LogReader reader) {
  auto base = [](const std::string& path) { return path.substr(path.find_last_of('/') + 1); };
  ReadOut out;
  for (;;) {
    LogRecord r;
    absl::StatusOr<bool> more = reader.Next(&r);
    if (!more.ok()) {
      out.status = more.status();
      break;
    }
    if (!*more) break;
    out.records.emplace_back(base(reader.current_path()), reader.end_offset(), r.lsn);
  }
  if (const auto& t = reader.torn_tail()) {
    out.torn.emplace(base(t->path), t->offset, t->bytes_dropped);
  }
  return out;
}

TEST_CASE("a log read from memory reads as from its files (records, offsets, a torn tail and "
          "damage)",
          "[log][recovery]") {
  TempDir dir;
  SlotOptions small;
  small.segment_bytes = 4096;
  FillSmallSegments(dir.path(), small);
  auto segs = ListSegments(dir.Sub("log")).value();
  REQUIRE(segs.size() >= 3);
  LogRecord next{1000, 0, RecordType::kAdminNote, std::string(300, 'x')};
  std::string encoded;
  EncodeRecord(next, &encoded);
  AppendBytes(segs.back().path, encoded.substr(0, 60));
  auto in_memory = [&] {
    std::vector<std::pair<uint64_t, std::string>> out;
    for (const SegmentInfo& s : segs) out.emplace_back(s.first_lsn, ReadFile(s.path).value());
    return out;
  };
  for (bool recovery : {true, false}) {
    INFO("recovery " << recovery);
    const ReadOut files = ReadThrough(LogReader::Open(dir.Sub("log"), 1, recovery).value());
    const ReadOut memory = ReadThrough(LogReader::OpenInMemory(in_memory(), 1, recovery).value());
    REQUIRE(files.status.ok());
    CHECK(files.records.size() == 31);
    CHECK(memory.status.ok());
    CHECK(memory.records == files.records);
    CHECK(memory.torn == files.torn);
    CHECK(files.torn.has_value() == recovery);
  }
  FlipByte(segs[0].path, 100);  // damage in a sealed segment
  const ReadOut files = ReadThrough(LogReader::Open(dir.Sub("log"), 1, true).value());
  const ReadOut memory = ReadThrough(LogReader::OpenInMemory(in_memory(), 1, true).value());
  CHECK(files.status.code() == absl::StatusCode::kDataLoss);
  CHECK(memory.status.code() == absl::StatusCode::kDataLoss);
  CHECK(memory.records == files.records);
  const std::string message(memory.status.message());
  CHECK_THAT(message, Catch::Contains(SegmentFileName(segs[0].first_lsn) + " offset "));
  CHECK_THAT(std::string(files.status.message()),
             Catch::Contains(message.substr(message.find(" offset "))));
}

TEST_CASE("a lost index is rebuilt from the log on open", "[log][recovery]") {
  TempDir dir;
  FillSlot(dir.path(), 4);
  Digest before = ReopenSlot(dir.path())->SlotDigest();
  REQUIRE(::unlink((dir.path() + "/meta/index.sqlite3").c_str()) == 0);
  ::unlink((dir.path() + "/meta/index.sqlite3-wal").c_str());
  ::unlink((dir.path() + "/meta/index.sqlite3-shm").c_str());
  auto slot = ReopenSlot(dir.path());
  CHECK(slot->recovery().records_replayed == 5);
  CHECK(slot->SlotDigest() == before);
}

TEST_CASE("a pack entry has the bytes docs/formats.md gives", "[log][spool]") {
  TempDir dir;
  Spool spool(dir.Sub("spool"));
  REQUIRE(spool.Init().ok());
  auto loc = spool.Append(Sha1("hello"), "hello");
  REQUIRE(loc.ok());
  CHECK(loc->pack == 1);
  CHECK(loc->offset == 0);
  CHECK(GuidHex(Sha1("hello")) == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
  std::ifstream in(spool.PackPath(1), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(absl::BytesToHexString(bytes) ==
        "4d425931a347283405000000aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d68656c6c6f");
  CHECK(spool.Read(Sha1("hello"), *loc).value() == "hello");
  CHECK(spool.Read(Sha1("other"), *loc).status().code() == absl::StatusCode::kDataLoss);
}

TEST_CASE("a body lost from the spool before a checkpoint is restored from the log",
          "[log][recovery]") {
  TempDir dir;
  std::string pack;
  {
    auto slot = NewSlot(dir.path());
    REQUIRE(slot->CreateMailbox("user/u").ok());
    auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(1)});
    REQUIRE(r.ok());
    pack = FindPackedBody(*slot, r->guid).path;
  }
  TruncateFile(pack, 0);  // as after a power loss: the pack was never synced
  auto slot = ReopenSlot(dir.path());
  CHECK(slot->recovery().bodies_restored == 1);
  CHECK(slot->FetchBody("user/u", 1).value() == TestMessage(1));
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("a torn pack tail is cut off at open and its bodies come back from the log",
          "[log][recovery]") {
  TempDir dir;
  PackedBody last;
  uint64_t clean_size = 0;
  {
    auto slot = NewSlot(dir.path());
    REQUIRE(slot->CreateMailbox("user/u").ok());
    for (int i = 0; i < 3; ++i) {
      REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 3000)}).ok());
    }
    auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(3, 3000)});
    REQUIRE(r.ok());
    last = FindPackedBody(*slot, r->guid);
    clean_size = FileSize(last.path);
  }
  // The crash cut the last entry in the middle of its body, after a page of
  // zeros the file system had already allocated.
  TruncateFile(last.path, last.body_offset + 1000);
  AppendBytes(last.path, std::string(4096, '\0'));
  auto slot = ReopenSlot(dir.path());
  REQUIRE(slot->recovery().pack_torn_tail.has_value());
  CHECK(slot->recovery().pack_torn_tail->path == last.path);
  CHECK(slot->recovery().pack_torn_tail->offset == last.entry_offset);
  CHECK(slot->recovery().bodies_restored == 1);
  for (int i = 0; i < 4; ++i) {
    CHECK(slot->FetchBody("user/u", i + 1).value() == TestMessage(i, 3000));
  }
  REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(4, 3000)}).ok());
  CHECK(slot->FetchBody("user/u", 5).value() == TestMessage(4, 3000));
  REQUIRE(slot->FlushBodies().ok());
  // The restored body took the torn entry's place; the new one follows.
  CHECK(FileSize(last.path) == clean_size + TestMessage(4, 3000).size() + kPackEntryHeaderSize);
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("damage in the middle of a pack is not mistaken for a torn tail", "[log][recovery]") {
  TempDir dir;
  PackedBody first;
  uint64_t size = 0;
  {
    auto slot = NewSlot(dir.path());
    REQUIRE(slot->CreateMailbox("user/u").ok());
    auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(0, 3000)});
    REQUIRE(r.ok());
    REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(1, 3000)}).ok());
    first = FindPackedBody(*slot, r->guid);
    REQUIRE(slot->Checkpoint().ok());
    size = FileSize(first.path);
  }
  FlipByte(first.path, first.entry_offset + 1);  // the magic of the first entry
  auto slot = ReopenSlot(dir.path());
  CHECK_FALSE(slot->recovery().pack_torn_tail.has_value());
  CHECK(FileSize(first.path) == size);
  CHECK(slot->FetchBody("user/u", 2).value() == TestMessage(1, 3000));
  auto fetched = slot->FetchBody("user/u", 1);
  CHECK(fetched.status().code() == absl::StatusCode::kDataLoss);
  CHECK_THAT(std::string(fetched.status().message()), Catch::Contains(first.path));
  auto report = VerifySlot(*slot);
  REQUIRE(report.ok());
  CHECK(report->problems.empty());
  REQUIRE(report->bad_bodies.size() == 1);
  CHECK_THAT(report->bad_bodies[0].problem, Catch::Contains(first.path));
}

TEST_CASE("a rebuilt index finds bodies that only the spool still holds", "[log][recovery]") {
  TempDir dir;
  {
    auto slot = NewSlot(dir.path(), {.segment_bytes = 2048});
    REQUIRE(slot->CreateMailbox("user/u").ok());
    for (int i = 0; i < 5; ++i) {
      REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 900)}).ok());
    }
    // Retention drops the records that carried the bodies.
    REQUIRE(slot->AdminNote("roll", "").ok());
    REQUIRE(slot->DropLogBelow(slot->last_lsn() + 1).ok());
    REQUIRE(slot->log_start_lsn() > 4);
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    ::unlink((dir.path() + "/meta/index.sqlite3" + suffix).c_str());
  }
  auto slot = ReopenSlot(dir.path());
  CHECK(slot->recovery().bodies_located == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(slot->FetchBody("user/u", i + 1).value() == TestMessage(i, 900));
  }
  CHECK(VerifySlot(*slot).value().clean());
}

TEST_CASE("verify finds a damaged body and an index that disagrees with the log",
          "[log][verify]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(1)});
  REQUIRE(r.ok());
  CHECK(VerifySlot(*slot).value().clean());
  const PackedBody packed = FindPackedBody(*slot, r->guid);
  FlipByte(packed.path, packed.body_offset + 10);  // a byte of the body in its pack
  auto report = VerifySlot(*slot);
  REQUIRE(report.ok());
  CHECK(report->problems.empty());
  REQUIRE(report->bad_bodies.size() == 1);
  CHECK(report->bad_bodies[0].guid == r->guid);
  CHECK_THAT(report->bad_bodies[0].problem, Catch::Contains(packed.path));
}

}  // namespace
}  // namespace mailrepl
