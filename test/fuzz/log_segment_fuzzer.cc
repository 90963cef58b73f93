// libFuzzer target for the change-log segment reader (store/log_reader.h)
// over whole segments held in memory (LogReader::OpenInMemory: the same
// parsing as over files): torn tails, truncation, zeros ahead, garbage
// between records, damage in sealed segments, LSN gaps, as recovery
// (Slot::Open) and a live reader (replication, salvage) read them.
// Built and run by scripts/fuzz.sh.
//
// Input: one control byte, then up to 8 segments separated by the bytes
// "%%SEGMENT%%" (in LSN order; each is named for the LSN of its first
// record's header, kept increasing).
//   bit 0: repair the CRCs of the records at the start of each segment
//          (walking the declared lengths), so that mutations reach the
//          LSN and torn-tail logic; clear: the framing itself.
//   bits 1-3: a third read, live, from LSN (value).
// A custom mutator (disk_fuzz.h) mutates decoded records and re-encodes
// them with valid CRCs, keeping the bytes between them.
//
// Invariants: every record returned is exactly the bytes at its offset in
// its segment (re-encoded), ends within the segment, continues the LSNs;
// an error is kDataLoss naming a segment; a torn tail is only reported in
// recovery, in the last segment, where the last record read ended, and
// spans to the end; cutting the torn tail off makes a second recovery
// clean with the same records; recovery returns a prefix of what a live
// reader returns, all of it when it ends without error; a live reader
// from LSN F returns what the full one returns from F on.
//
// Seeds: test/fuzz/corpus/log_segment_fuzzer/, made by the project's own
// writers: build-fuzz/bin/make_disk_seeds test/fuzz/corpus (test/fuzz/
// make_disk_seeds.cc; flock /tmp/mr-build.lock cmake --build build-fuzz
// --target make_disk_seeds).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "store/log_format.h"
#include "store/log_reader.h"
#include "test/fuzz/disk_fuzz.h"

namespace mailrepl {
namespace {

using fuzz::Check;

constexpr char kSeparator[] = "%%SEGMENT%%";
constexpr size_t kMaxSegments = 8;

using Segments = std::vector<std::pair<uint64_t, std::string>>;

struct Read {
  struct Item {
    size_t segment;
    uint64_t end;
    LogRecord record;
  };
  std::vector<Item> records;
  absl::Status status;  // of the last Next()
  std::optional<TornTail> torn;
  size_t last_segment = 0;  // where the reader was at the end
  uint64_t end_offset = 0;
};

size_t SegmentOf(const Segments& segments, const std::string& path) {
  for (size_t i = 0; i < segments.size(); ++i) {
    if (SegmentFileName(segments[i].first) == path) return i;
  }
  Check(false, "the reader's path is one of the segments");
  return 0;
}

Read ReadAll(const Segments& segments, uint64_t from_lsn, bool recovery) {
  Read out;
  auto reader = LogReader::OpenInMemory(segments, from_lsn, recovery);
  Check(reader.ok(), "opening in-memory segments never fails");
  size_t total = 0;
  for (const auto& [lsn, bytes] : segments) total += bytes.size();
  uint64_t last = 0;  // as the reader keeps it
  for (size_t calls = 0;; ++calls) {
    Check(calls <= total / kRecordHeaderSize + 1, "the reader ends");
    LogRecord r;
    absl::StatusOr<bool> more = reader->Next(&r);
    if (!more.ok()) {
      out.status = more.status();
      Check(out.status.code() == absl::StatusCode::kDataLoss, "damage is kDataLoss");
      bool names = false;
      for (const auto& [lsn, bytes] : segments) {
        names = names || absl::StrContains(out.status.message(),
                                           "change log " + SegmentFileName(lsn) + " offset ");
      }
      Check(names, "an error names the segment and offset");
      break;
    }
    if (segments.empty()) {
      Check(!*more, "no segments, no records");
      break;
    }
    const size_t seg = SegmentOf(segments, reader->current_path());
    out.last_segment = seg;
    out.end_offset = reader->end_offset();
    if (!*more) break;
    const std::string& bytes = segments[seg].second;
    std::string encoded;
    EncodeRecord(r, &encoded);
    Check(reader->end_offset() <= bytes.size(), "a record ends within its segment");
    Check(reader->end_offset() >= encoded.size(), "a record starts within its segment");
    Check(absl::string_view(bytes).substr(reader->end_offset() - encoded.size(),
                                          encoded.size()) == encoded,
          "a record returned is the bytes at its offset");
    Check(IsLogRecordType(static_cast<uint8_t>(r.type)) ||
              IsSnapshotEntryType(static_cast<uint8_t>(r.type)) ||
              IsSalvageEntryType(static_cast<uint8_t>(r.type)),
          "a record returned has a known type");
    Check(r.lsn >= from_lsn, "records below from_lsn are skipped");
    if (last != 0 && last != std::numeric_limits<uint64_t>::max()) {
      Check(r.lsn == (IsLocalRecordType(r.type) ? last : last + 1), "LSNs are dense");
    }
    last = std::max(last, r.lsn);
    out.records.push_back({seg, reader->end_offset(), std::move(r)});
  }
  out.torn = reader->torn_tail();
  return out;
}

bool SameRecord(const Read::Item& a, const Read::Item& b) {
  return a.segment == b.segment && a.end == b.end && a.record.lsn == b.record.lsn &&
         a.record.epoch == b.record.epoch && a.record.type == b.record.type &&
         a.record.payload == b.record.payload;
}

bool IsPrefix(const std::vector<Read::Item>& a, const std::vector<Read::Item>& b) {
  if (a.size() > b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!SameRecord(a[i], b[i])) return false;
  }
  return true;
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
  const uint8_t control = data[0];
  std::vector<std::string> parts = fuzz::Split(
      absl::string_view(reinterpret_cast<const char*>(data + 1), size - 1), kSeparator);
  if (parts.size() > kMaxSegments) parts.resize(kMaxSegments);
  Segments segments;
  uint64_t prev = 0;
  for (std::string& bytes : parts) {
    if ((control & 1) != 0) fuzz::RepairRecordCrcs(&bytes);
    uint64_t lsn = bytes.size() >= 16 ? fuzz::GetFixed64(bytes, 8) : 0;
    lsn = std::min<uint64_t>(lsn, uint64_t{1} << 62);
    prev = std::max(prev + 1, lsn);
    segments.emplace_back(prev, std::move(bytes));
  }

  // Recovery (Slot::Open reads from LSN 1) and a live reader.
  const Read recovery = ReadAll(segments, 1, /*recovery=*/true);
  const Read live = ReadAll(segments, 1, /*recovery=*/false);
  Check(!live.torn, "a live reader reports no torn tail");
  Check(IsPrefix(recovery.records, live.records), "recovery reads a prefix of the live read");
  if (recovery.status.ok()) {
    Check(live.status.ok() && live.records.size() == recovery.records.size(),
          "a clean recovery reads what a live reader reads");
  }
  if (recovery.torn) {
    const TornTail& t = *recovery.torn;
    Check(recovery.status.ok(), "a torn tail ends the read cleanly");
    Check(t.path == SegmentFileName(segments.back().first), "a torn tail is in the last segment");
    Check(recovery.last_segment + 1 == segments.size() && t.offset == recovery.end_offset,
          "a torn tail starts where the last record read ended");
    Check(t.bytes_dropped > 0 && t.offset + t.bytes_dropped == segments.back().second.size(),
          "a torn tail spans to the end of the segment");
    // What Slot::Open does next: cut it off. Then recovery is clean.
    Segments cut = segments;
    cut.back().second.resize(t.offset);
    const Read again = ReadAll(cut, 1, /*recovery=*/true);
    Check(again.status.ok() && !again.torn, "recovery after the cut is clean");
    Check(again.records.size() == recovery.records.size() &&
              IsPrefix(again.records, recovery.records),
          "recovery after the cut reads the same records");
  }

  // A live reader from a later LSN returns what the full read does from
  // the segment it starts in and that LSN on.
  const uint64_t from = (control >> 1) & 7;
  if (from > 1 && live.status.ok()) {
    size_t start = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      if (segments[i].first <= from) start = i;
    }
    const Read part = ReadAll(segments, from, /*recovery=*/false);
    std::vector<Read::Item> want;
    for (const Read::Item& item : live.records) {
      if (item.segment >= start && item.record.lsn >= from) want.push_back(item);
    }
    Check(part.status.ok() && part.records.size() == want.size() && IsPrefix(part.records, want),
          "a read from a later LSN returns the rest of the full read");
  }
  return 0;
}
