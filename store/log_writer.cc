#include "store/log_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/mutex.h"
#include "common/status_macros.h"
#include "store/log_format.h"
#include "store/log_reader.h"

namespace mailrepl {

// Writes zeros ahead of the writer in the current segment, on a thread of
// its own, and fdatasyncs them. Below zeroed_end() the file holds zeros or
// records and this class writes nothing there, so the writer overwrites that
// range without a lock; the writer grows the file past it only under mu().
class LogWriter::Zeroer {
 public:
  explicit Zeroer(uint64_t ahead) : ahead_(ahead), thread_([this] { Run(); }) {}
  ~Zeroer() {
    {
      MutexLock l(mu_);
      stopping_ = true;
    }
    cv_.Signal();
    thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }

  // The writer now appends to this file (its own descriptor stays the
  // writer's), whose bytes end at file_size.
  absl::Status Reset(int fd, const std::string& path, uint64_t file_size) {
    MutexLock sl(sync_mu_);  // waits out an fdatasync of the old file
    MutexLock l(mu_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    sync_fd_ = fd_;
    if (fd_ < 0) return ErrnoStatus(errno, "dup descriptor of", path);
    path_ = path;
    zeroed_end_.store(file_size, std::memory_order_release);
    want_ = 0;
    failed_ = false;
    return absl::OkStatus();
  }

  uint64_t zeroed_end() const { return zeroed_end_.load(std::memory_order_acquire); }
  Mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }
  // The writer made the file end at `end`.
  void SetEndLocked(uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    zeroed_end_.store(end, std::memory_order_release);
  }
  // The writer's records now end at `end`: keep zeros well ahead of it, up
  // to the segment's size (a sealed segment ends with its last record).
  void Advance(uint64_t end, uint64_t segment_bytes) {
    const uint64_t want = std::min(end + ahead_, segment_bytes);
    if (zeroed_end() >= std::min(end + ahead_ / 2, want)) return;
    {
      MutexLock l(mu_);
      want_ = std::max(want_, want);
    }
    cv_.Signal();
  }

 private:
  void Run() {
    static const std::string kZeros(256 << 10, '\0');
    MutexLock l(mu_);
    for (;;) {
      while (!stopping_ && (failed_ || want_ <= zeroed_end())) cv_.Wait(l);
      if (stopping_) return;
      // Space is worth more than speed on a nearly full file system.
      struct statvfs fs;
      if (::fstatvfs(fd_, &fs) != 0 ||
          static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < kMinFreeBytes) {
        failed_ = true;  // until the next segment
        continue;
      }
      uint64_t end = zeroed_end();
      absl::Status s;
      while (s.ok() && end < want_) {
        const uint64_t n = std::min<uint64_t>(kZeros.size(), want_ - end);
        s = PwriteAll(fd_, absl::string_view(kZeros).substr(0, n), end, path_);
        if (s.ok()) end += n;
      }
      if (!s.ok()) {
        // A full disk, say: appends simply grow the file as before. What
        // was written stays zeros past the records, which readers accept.
        LogLine(Severity::kWarning, "change log: cannot write zeros ahead of the writer",
                Kv("file", path_) + Kv("error", s.message()));
        failed_ = true;
      }
      zeroed_end_.store(end, std::memory_order_release);
      l.Unlock();
      {
        MutexLock sl(sync_mu_);
        if (sync_fd_ >= 0) ::fdatasync(sync_fd_);  // best effort: the writer's fdatasync covers it too
      }
      l.Lock();
    }
  }

  // No zeros ahead on a file system with less free space than this.
  static constexpr uint64_t kMinFreeBytes = 256u << 20;
  const uint64_t ahead_;
  Mutex sync_mu_;  // held over fdatasync(sync_fd_); taken before mu_
  Mutex mu_;
  CondVar cv_;
  // Our duplicate of the writer's descriptor; Reset replaces it under both
  // locks. fd_ is for writing zeros (under mu_), sync_fd_ (the same
  // descriptor) for the fdatasync, which runs under sync_mu_ alone so that
  // the writer may grow the file meanwhile.
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  int sync_fd_ ABSL_GUARDED_BY(sync_mu_) = -1;
  std::string path_ ABSL_GUARDED_BY(mu_);
  // Written under mu_; the writer reads it without the lock to skip it.
  std::atomic<uint64_t> zeroed_end_{0};
  uint64_t want_ ABSL_GUARDED_BY(mu_) = 0;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: started once the fields above exist
};

LogWriter::LogWriter(LogWriter&& o) noexcept
    : dir_(std::move(o.dir_)),
      path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      size_(o.size_),
      segment_bytes_(o.segment_bytes_),
      zeroer_(std::move(o.zeroer_)) {}

LogWriter& LogWriter::operator=(LogWriter&& o) noexcept {
  if (this != &o) {
    zeroer_.reset();
    if (fd_ >= 0) ::close(fd_);
    dir_ = std::move(o.dir_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    size_ = o.size_;
    segment_bytes_ = o.segment_bytes_;
    zeroer_ = std::move(o.zeroer_);
  }
  return *this;
}

LogWriter::~LogWriter() {
  zeroer_.reset();
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<LogWriter> LogWriter::Open(const std::string& log_dir, uint64_t next_lsn,
                                          uint64_t segment_bytes,
                                          std::optional<AppendAt> append_at,
                                          uint64_t zero_ahead) {
  LogWriter w;
  w.dir_ = log_dir;
  w.segment_bytes_ = segment_bytes;
  if (zero_ahead > 0) w.zeroer_ = std::make_unique<Zeroer>(zero_ahead);
  ASSIGN_OR_RETURN(auto segments, ListSegments(log_dir));
  if (segments.empty()) {
    RETURN_IF_ERROR(w.StartSegment(next_lsn));
    return w;
  }
  w.path_ = segments.back().path;
  if (append_at && append_at->path != w.path_) {
    return absl::InternalError(absl::StrCat("recovery ended in ", append_at->path,
                                            " but the last log segment is ", w.path_));
  }
  w.fd_ = ::open(w.path_.c_str(), O_WRONLY | O_CLOEXEC);
  if (w.fd_ < 0) return ErrnoStatus(errno, "open log segment", w.path_);
  struct stat st;
  if (::fstat(w.fd_, &st) != 0) return ErrnoStatus(errno, "stat", w.path_);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  w.size_ = append_at ? std::min(append_at->offset, file_size) : file_size;
  if (w.zeroer_) RETURN_IF_ERROR(w.zeroer_->Reset(w.fd_, w.path_, file_size));
  return w;
}

absl::Status LogWriter::StartSegment(uint64_t first_lsn) {
  std::string path = absl::StrCat(dir_, "/", SegmentFileName(first_lsn));
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create log segment", path);
  absl::Status s = SyncDir(dir_);
  struct stat st;
  if (s.ok() && ::fstat(fd, &st) != 0) s = ErrnoStatus(errno, "stat", path);
  if (s.ok() && zeroer_) s = zeroer_->Reset(fd, path, static_cast<uint64_t>(st.st_size));
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  path_ = path;
  size_ = static_cast<uint64_t>(st.st_size);
  return absl::OkStatus();
}

absl::Status LogWriter::Append(uint64_t first_lsn, absl::string_view encoded) {
  if (size_ >= segment_bytes_) {
    RETURN_IF_ERROR(Sync());  // the sealed segment must be durable before we move on
    RETURN_IF_ERROR(StartSegment(first_lsn));
  }
  const uint64_t end = size_ + encoded.size();
  // Over zeros the zeroer has written, no lock is needed; growing the file,
  // the zeroer must not write meanwhile. A failed write is cut back so the
  // log never holds half a batch (and the zeros ahead are dropped, which
  // the next appends write again), with the zeroer's lock held.
  if (zeroer_ == nullptr) {
    absl::Status s = PwriteAll(fd_, encoded, size_, path_);
    if (!s.ok()) return CutBack() ? s : CutBackError(s);
  } else if (end <= zeroer_->zeroed_end()) {
    absl::Status s = PwriteAll(fd_, encoded, size_, path_);
    if (!s.ok()) {
      MutexLock l(zeroer_->mu());
      if (!CutBack()) return CutBackError(s);
      zeroer_->SetEndLocked(size_);
      return s;
    }
  } else {
    MutexLock l(zeroer_->mu());
    absl::Status s = PwriteAll(fd_, encoded, size_, path_);
    if (!s.ok()) {
      if (!CutBack()) return CutBackError(s);
      zeroer_->SetEndLocked(size_);
      return s;
    }
    zeroer_->SetEndLocked(std::max(end, zeroer_->zeroed_end()));
  }  // unlocked: Advance takes it
  size_ = end;
  if (zeroer_ && size_ < segment_bytes_) zeroer_->Advance(size_, segment_bytes_);
  return absl::OkStatus();
}

bool LogWriter::CutBack() { return ::ftruncate(fd_, static_cast<off_t>(size_)) == 0; }

absl::Status LogWriter::CutBackError(const absl::Status& cause) const {
  return absl::DataLossError(absl::StrCat(cause.message(), "; and cutting back ", path_,
                                          " to offset ", size_, " failed too"));
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
