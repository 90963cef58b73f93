// Appends encoded records to the change log's current segment and makes them
// durable. Starts a new segment when the current one is full. Thread-
// compatible: the Slot's group-commit leader is its only caller at a time.
#ifndef MAILREPL_STORE_LOG_WRITER_H_
#define MAILREPL_STORE_LOG_WRITER_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mailrepl {

class LogWriter {
 public:
  // Opens the last segment of log_dir for appending at append_offset (the end
  // of its valid records), or creates the first segment for next_lsn.
  static absl::StatusOr<LogWriter> Open(const std::string& log_dir, uint64_t next_lsn,
                                        uint64_t segment_bytes);

  // Appends already-encoded records whose first LSN is first_lsn. If the
  // current segment is full, a new one named after first_lsn is started
  // first. On a failed write the segment is cut back to where it was, so a
  // failed append leaves nothing behind.
  absl::Status Append(uint64_t first_lsn, absl::string_view encoded);
  // fdatasync of the current segment.
  absl::Status Sync();

  // Removes every segment whose records all have LSN < lsn, keeping the
  // current one. Returns how many were removed.
  absl::StatusOr<int> DropSegmentsBelow(uint64_t lsn);

  const std::string& current_path() const { return path_; }
  uint64_t current_size() const { return size_; }

  LogWriter(LogWriter&& other) noexcept;
  LogWriter& operator=(LogWriter&& other) noexcept;
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;
  ~LogWriter();

 private:
  LogWriter() = default;
  absl::Status StartSegment(uint64_t first_lsn);

  std::string dir_;
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t segment_bytes_ = 0;
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_LOG_WRITER_H_
