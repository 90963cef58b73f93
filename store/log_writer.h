// Appends encoded records to the change log's current segment and makes them
// durable. Starts a new segment when the current one is full. Thread-
// compatible: the Slot's group-commit leader is its only caller at a time.
//
// Zeros ahead: a background thread keeps the current segment written with
// zeros (and fdatasync'd) some way past its last record, so that an append
// overwrites blocks that already exist and its fdatasync flushes data only.
// An append that grows the file must also write the file's size and block
// map, which made fdatasync 1.5 to 1.9 times slower on this machine's ext4
// (`docs/formats.md`, "Segments"). Readers stop at a record header of zeros.
#ifndef MAILREPL_STORE_LOG_WRITER_H_
#define MAILREPL_STORE_LOG_WRITER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mailrepl {

class LogWriter {
 public:
  // Where recovery found the end of the last segment's records.
  struct AppendAt {
    std::string path;
    uint64_t offset = 0;
  };
  // Opens the last segment of log_dir for appending at append_at (the end of
  // its valid records; the zeros after it are kept) or, without it, at the
  // end of the file; or creates the first segment for next_lsn. zero_ahead
  // 0: no zeros ahead.
  static absl::StatusOr<LogWriter> Open(const std::string& log_dir, uint64_t next_lsn,
                                        uint64_t segment_bytes,
                                        std::optional<AppendAt> append_at = std::nullopt,
                                        uint64_t zero_ahead = kDefaultZeroAhead);

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

  // Bytes of zeros kept written ahead of the last record.
  static constexpr uint64_t kDefaultZeroAhead = 2u << 20;

  LogWriter(LogWriter&& other) noexcept;
  LogWriter& operator=(LogWriter&& other) noexcept;
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;
  ~LogWriter();

 private:
  class Zeroer;
  LogWriter() = default;
  absl::Status StartSegment(uint64_t first_lsn);
  // After a failed write: cuts the segment back to size_; false if that
  // failed too, and then CutBackError(cause) says so.
  bool CutBack();
  absl::Status CutBackError(const absl::Status& cause) const;

  std::string dir_;
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;  // end of the last record: where the next append goes
  uint64_t segment_bytes_ = 0;
  std::unique_ptr<Zeroer> zeroer_;  // null: no zeros ahead
};

}  // namespace mailrepl

#endif  // MAILREPL_STORE_LOG_WRITER_H_
