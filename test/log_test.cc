// The change-log format and its corruption policy: a torn tail after a crash
// is truncated and reported; damage anywhere else refuses the open, naming
// the file and the offset.
#include <catch2/catch.hpp>

#include "common/crc32c.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "store/verify.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

using testing::FileSize;
using testing::FlipByte;
using testing::LastSegment;
using testing::NewSlot;
using testing::ReopenSlot;
using testing::TempDir;
using testing::TestMessage;

// A slot with one mailbox and n appended messages; returns the per-record
// end offsets of its single segment.
std::vector<uint64_t> FillSlot(const std::string& dir, int n) {
  auto slot = NewSlot(dir);
  REQUIRE(slot->CreateMailbox("user/u").ok());
  for (int i = 0; i < n; ++i) {
    REQUIRE(slot->Append({.mailbox = "user/u", .body = TestMessage(i, 500)}).ok());
  }
  slot.reset();
  std::vector<uint64_t> ends;
  auto reader = LogReader::Open(dir + "/log", 1, false);
  REQUIRE(reader.ok());
  LogRecord r;
  while (reader->Next(&r).value()) ends.push_back(reader->end_offset());
  return ends;
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
  uint64_t full = FileSize(seg);
  REQUIRE(full == ends.back());
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

TEST_CASE("zeros after the last record are a torn tail", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 3);
  std::string seg = LastSegment(dir.path());
  testing::AppendBytes(seg, std::string(4096, '\0'));
  auto slot = ReopenSlot(dir.path());
  REQUIRE(slot->recovery().torn_tail.has_value());
  CHECK(slot->recovery().torn_tail->offset == ends.back());
  CHECK(slot->GetMailbox("user/u").value().messages == 3);
}

TEST_CASE("a flipped byte in the middle of the log refuses the open, naming file and offset",
          "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 6);
  std::string seg = LastSegment(dir.path());
  FlipByte(seg, ends[2] + 40);  // inside the fourth record
  auto slot = Slot::Open(SlotPaths::Under(dir.path()), {});
  REQUIRE_FALSE(slot.ok());
  CHECK(slot.status().code() == absl::StatusCode::kDataLoss);
  std::string msg(slot.status().message());
  CHECK_THAT(msg, Catch::Contains(seg));
  CHECK_THAT(msg, Catch::Contains("offset " + std::to_string(ends[2])));
  CHECK(FileSize(seg) == ends.back());  // nothing was truncated
}

TEST_CASE("a damaged length field mid-log is not mistaken for a torn tail", "[log][recovery]") {
  TempDir dir;
  auto ends = FillSlot(dir.path(), 6);
  std::string seg = LastSegment(dir.path());
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

TEST_CASE("a body lost from the spool before a checkpoint is restored from the log",
          "[log][recovery]") {
  TempDir dir;
  std::string path;
  {
    auto slot = NewSlot(dir.path());
    REQUIRE(slot->CreateMailbox("user/u").ok());
    auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(1)});
    REQUIRE(r.ok());
    path = slot->WithIndex([&](Index&, Spool& sp) { return sp.PathFor(r->guid); });
  }
  REQUIRE(::unlink(path.c_str()) == 0);  // as after a power loss
  auto slot = ReopenSlot(dir.path());
  CHECK(slot->recovery().bodies_restored == 1);
  CHECK(slot->FetchBody("user/u", 1).value() == TestMessage(1));
}

TEST_CASE("verify finds a damaged body and an index that disagrees with the log",
          "[log][verify]") {
  TempDir dir;
  auto slot = NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/u").ok());
  auto r = slot->Append({.mailbox = "user/u", .body = TestMessage(1)});
  REQUIRE(r.ok());
  CHECK(VerifySlot(*slot).value().clean());
  std::string path = slot->WithIndex([&](Index&, Spool& sp) { return sp.PathFor(r->guid); });
  FlipByte(path, 10);
  auto report = VerifySlot(*slot);
  REQUIRE(report.ok());
  REQUIRE(report->problems.size() == 1);
  CHECK_THAT(report->problems[0], Catch::Contains(path));
}

}  // namespace
}  // namespace mailrepl
