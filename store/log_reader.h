// Reads change-log segments in LSN order, verifying every record, and tells a
// torn tail (the unacknowledged end of the last segment, after a crash) from
// damage anywhere else. Thread-compatible: one reader per thread; any number
// of readers may run while a LogWriter appends.
#ifndef MAILREPL_STORE_LOG_READER_H_
#define MAILREPL_STORE_LOG_READER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "store/log_format.h"

namespace mailrepl {

struct SegmentInfo {
  uint64_t first_lsn = 0;
  std::string path;
};

// The segments of log_dir in LSN order.
absl::StatusOr<std::vector<SegmentInfo>> ListSegments(const std::string& log_dir);

// Where the valid log ends when its last segment has a torn tail.
struct TornTail {
  std::string path;
  uint64_t offset = 0;         // first byte not part of a valid record
  uint64_t bytes_dropped = 0;  // from offset to the end of the file
};

class LogReader {
 public:
  // Reads records with LSN >= from_lsn. In recovery mode a bad record at the
  // end of the last segment is a torn tail (see torn_tail()); otherwise the
  // end of the valid data is simply where reading stops (the writer may be
  // in the middle of an append).
  static absl::StatusOr<LogReader> Open(const std::string& log_dir, uint64_t from_lsn,
                                        bool recovery);

  // The same reader over segments held in memory instead of a directory
  // (the fuzzers, test/fuzz/log_segment_fuzzer.cc): segment i has the bytes
  // of segments[i].second and is named for first LSN segments[i].first
  // (its path in messages is SegmentFileName(first LSN)). Same parsing,
  // same rules; a live reader finds no new segment appear.
  static absl::StatusOr<LogReader> OpenInMemory(
      std::vector<std::pair<uint64_t, std::string>> segments, uint64_t from_lsn, bool recovery);

  // Sets *record to the next record and returns true; false at the end.
  // Returns kDataLoss naming file and offset when a record is damaged in the
  // middle of the log, or LSNs are not contiguous.
  absl::StatusOr<bool> Next(LogRecord* record);

  // Set once Next() returned false in recovery mode and the tail was torn.
  const std::optional<TornTail>& torn_tail() const { return torn_tail_; }
  // Path and offset of the end of the last record returned.
  const std::string& current_path() const { return path_; }
  uint64_t end_offset() const { return offset_; }

  LogReader(LogReader&& other) noexcept;
  LogReader& operator=(LogReader&& other) noexcept;
  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;
  ~LogReader();

 private:
  LogReader() = default;
  absl::Status OpenSegment(size_t index);
  // Whether a segment is open (a file, or one of memory_).
  bool IsOpen() const { return fd_ >= 0 || memory_open_; }
  absl::StatusOr<bool> ReadAt(uint64_t offset, size_t n, std::string* out);
  // The current segment's size now; nullopt if the file cannot be stat'd.
  std::optional<uint64_t> SegmentSize() const;
  // True when no valid record starts anywhere in [from, file end).
  bool NothingValidAfter(uint64_t from, uint64_t expected_lsn);
  static bool IsAllZero(absl::string_view bytes);
  // True when every byte from `from` to the end of the file is zero.
  bool ZerosToEnd(uint64_t from);

  std::string log_dir_;
  std::vector<SegmentInfo> segments_;
  size_t segment_ = 0;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  std::string path_;
  uint64_t offset_ = 0;
  uint64_t from_lsn_ = 0;
  uint64_t last_lsn_ = 0;  // 0 until the first record
  bool recovery_ = false;
  std::optional<TornTail> torn_tail_;
  // OpenInMemory: the bytes of segments_[i] (no files are read).
  std::vector<std::string> memory_;
  bool in_memory_ = false;
  bool memory_open_ = false;
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_LOG_READER_H_
