#include "store/log_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "store/log_format.h"
#include "store/log_reader.h"

namespace mailrepl {

LogWriter::LogWriter(LogWriter&& o) noexcept
    : dir_(std::move(o.dir_)),
      path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      size_(o.size_),
      segment_bytes_(o.segment_bytes_) {}

LogWriter& LogWriter::operator=(LogWriter&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    dir_ = std::move(o.dir_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    size_ = o.size_;
    segment_bytes_ = o.segment_bytes_;
  }
  return *this;
}

LogWriter::~LogWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<LogWriter> LogWriter::Open(const std::string& log_dir, uint64_t next_lsn,
                                          uint64_t segment_bytes) {
  LogWriter w;
  w.dir_ = log_dir;
  w.segment_bytes_ = segment_bytes;
  ASSIGN_OR_RETURN(auto segments, ListSegments(log_dir));
  if (segments.empty()) {
    RETURN_IF_ERROR(w.StartSegment(next_lsn));
    return w;
  }
  w.path_ = segments.back().path;
  w.fd_ = ::open(w.path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (w.fd_ < 0) return ErrnoStatus(errno, "open log segment", w.path_);
  struct stat st;
  if (::fstat(w.fd_, &st) != 0) return ErrnoStatus(errno, "stat", w.path_);
  w.size_ = static_cast<uint64_t>(st.st_size);
  return w;
}

absl::Status LogWriter::StartSegment(uint64_t first_lsn) {
  std::string path = absl::StrCat(dir_, "/", SegmentFileName(first_lsn));
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create log segment", path);
  absl::Status s = SyncDir(dir_);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  path_ = path;
  struct stat st;
  size_ = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return absl::OkStatus();
}

absl::Status LogWriter::Append(uint64_t first_lsn, absl::string_view encoded) {
  if (size_ >= segment_bytes_) {
    RETURN_IF_ERROR(Sync());  // the sealed segment must be durable before we move on
    RETURN_IF_ERROR(StartSegment(first_lsn));
  }
  absl::Status s = WriteAll(fd_, encoded, path_);
  if (!s.ok()) {
    // Cut back a partial write so the log never holds half a batch.
    if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
      return absl::DataLossError(absl::StrCat(s.message(), "; and cutting back ", path_,
                                              " to offset ", size_, " failed too"));
    }
    return s;
  }
  size_ += encoded.size();
  return absl::OkStatus();
}

absl::Status LogWriter::Sync() {
  if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, "fdatasync", path_);
  return absl::OkStatus();
}

absl::StatusOr<int> LogWriter::DropSegmentsBelow(uint64_t lsn) {
  ASSIGN_OR_RETURN(auto segments, ListSegments(dir_));
  int dropped = 0;
  // Segment i holds LSNs [first_lsn(i), first_lsn(i+1)).
  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    // A local record may repeat the last LSN of the segment before it.
    if (segments[i + 1].first_lsn >= lsn) break;
    if (segments[i].path == path_) break;
    if (::unlink(segments[i].path.c_str()) != 0) {
      return ErrnoStatus(errno, "remove log segment", segments[i].path);
    }
    ++dropped;
  }
  if (dropped > 0) RETURN_IF_ERROR(SyncDir(dir_));
  return dropped;
}

}  // namespace mailrepl
