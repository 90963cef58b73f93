#include "store/log_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace mailrepl {

absl::StatusOr<std::vector<SegmentInfo>> ListSegments(const std::string& log_dir) {
  DIR* d = ::opendir(log_dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "open log directory", log_dir);
  std::vector<SegmentInfo> out;
  while (dirent* e = ::readdir(d)) {
    uint64_t lsn;
    if (ParseSegmentFileName(e->d_name, &lsn)) {
      out.push_back({lsn, absl::StrCat(log_dir, "/", e->d_name)});
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const SegmentInfo& a, const SegmentInfo& b) { return a.first_lsn < b.first_lsn; });
  return out;
}

LogReader::LogReader(LogReader&& o) noexcept { *this = std::move(o); }

LogReader& LogReader::operator=(LogReader&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    segments_ = std::move(o.segments_);
    log_dir_ = std::move(o.log_dir_);
    segment_ = o.segment_;
    fd_ = std::exchange(o.fd_, -1);
    file_size_ = o.file_size_;
    path_ = std::move(o.path_);
    offset_ = o.offset_;
    from_lsn_ = o.from_lsn_;
    last_lsn_ = o.last_lsn_;
    recovery_ = o.recovery_;
    torn_tail_ = std::move(o.torn_tail_);
    memory_ = std::move(o.memory_);
    in_memory_ = o.in_memory_;
    memory_open_ = std::exchange(o.memory_open_, false);
  }
  return *this;
}

LogReader::~LogReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<LogReader> LogReader::Open(const std::string& log_dir, uint64_t from_lsn,
                                          bool recovery) {
  LogReader r;
  ASSIGN_OR_RETURN(r.segments_, ListSegments(log_dir));
  r.log_dir_ = log_dir;
  r.from_lsn_ = from_lsn;
  r.recovery_ = recovery;
  // Start with the last segment whose first LSN is <= from_lsn.
  size_t start = 0;
  for (size_t i = 0; i < r.segments_.size(); ++i) {
    if (r.segments_[i].first_lsn <= from_lsn) start = i;
  }
  if (recovery) start = 0;  // recovery verifies every segment
  if (!r.segments_.empty()) RETURN_IF_ERROR(r.OpenSegment(start));
  return r;
}

absl::StatusOr<LogReader> LogReader::OpenInMemory(
    std::vector<std::pair<uint64_t, std::string>> segments, uint64_t from_lsn, bool recovery) {
  std::sort(segments.begin(), segments.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  LogReader r;
  r.in_memory_ = true;
  r.from_lsn_ = from_lsn;
  r.recovery_ = recovery;
  for (auto& [first_lsn, bytes] : segments) {
    r.segments_.push_back({first_lsn, SegmentFileName(first_lsn)});
    r.memory_.push_back(std::move(bytes));
  }
  // As Open().
  size_t start = 0;
  for (size_t i = 0; i < r.segments_.size(); ++i) {
    if (r.segments_[i].first_lsn <= from_lsn) start = i;
  }
  if (recovery) start = 0;
  if (!r.segments_.empty()) RETURN_IF_ERROR(r.OpenSegment(start));
  return r;
}

absl::Status LogReader::OpenSegment(size_t index) {
  if (fd_ >= 0) ::close(fd_);
  segment_ = index;
  path_ = segments_[index].path;
  if (in_memory_) {
    memory_open_ = true;
    offset_ = 0;
    return absl::OkStatus();
  }
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return ErrnoStatus(errno, "open log segment", path_);
  offset_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<bool> LogReader::ReadAt(uint64_t offset, size_t n, std::string* out) {
  if (in_memory_) {
    const std::string& bytes = memory_[segment_];
    const absl::string_view rest =
        offset < bytes.size() ? absl::string_view(bytes).substr(offset) : absl::string_view();
    out->assign(rest.data(), std::min(rest.size(), n));
    return out->size() == n;
  }
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd_, out->data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read log segment", path_);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out->resize(got);
  return got == n;
}

bool LogReader::IsAllZero(absl::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

std::optional<uint64_t> LogReader::SegmentSize() const {
  if (in_memory_) return memory_[segment_].size();
  struct stat st;
  if (::fstat(fd_, &st) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

bool LogReader::ZerosToEnd(uint64_t from) {
  const std::optional<uint64_t> file_size = SegmentSize();
  if (!file_size) return false;
  const uint64_t size = *file_size;
  std::string buf;
  for (uint64_t at = from; at < size; at += buf.size()) {
    auto ok = ReadAt(at, static_cast<size_t>(std::min<uint64_t>(1 << 20, size - at)), &buf);
    if (!ok.ok() || buf.empty() || !IsAllZero(buf)) return false;
  }
  return true;
}

bool LogReader::NothingValidAfter(uint64_t from, uint64_t expected_lsn) {
  // Look for any record that parses and has a plausible LSN. Only called on
  // the recovery path after a bad record, so a byte-by-byte scan is fine.
  std::string buf;
  const std::optional<uint64_t> file_size = SegmentSize();
  if (!file_size) return false;
  uint64_t size = *file_size;
  if (size <= from) return true;
  auto ok = ReadAt(from, size - from, &buf);
  if (!ok.ok()) return false;
  for (size_t pos = 1; pos + kRecordHeaderSize <= buf.size(); ++pos) {
    LogRecord rec;
    size_t consumed;
    if (DecodeRecord(absl::string_view(buf).substr(pos), &rec, &consumed) == DecodeStatus::kOk &&
        rec.lsn >= expected_lsn) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<bool> LogReader::Next(LogRecord* record) {
  std::string header, whole;
  while (IsOpen()) {
    ASSIGN_OR_RETURN(bool full, ReadAt(offset_, kRecordHeaderSize, &header));
    bool last_segment = segment_ + 1 == segments_.size();
    DecodeStatus st = DecodeStatus::kNeedMore;
    size_t consumed = 0;
    if (full) {
      LogRecord probe;
      st = DecodeRecord(header, &probe, &consumed);  // checks the header's plausibility
      if (st == DecodeStatus::kNeedMore) {
        uint32_t len = static_cast<uint32_t>(static_cast<uint8_t>(header[4])) |
                       static_cast<uint32_t>(static_cast<uint8_t>(header[5])) << 8 |
                       static_cast<uint32_t>(static_cast<uint8_t>(header[6])) << 16 |
                       static_cast<uint32_t>(static_cast<uint8_t>(header[7])) << 24;
        ASSIGN_OR_RETURN(bool have, ReadAt(offset_, kRecordHeaderSize + len, &whole));
        st = have ? DecodeRecord(whole, record, &consumed) : DecodeStatus::kNeedMore;
      } else if (st == DecodeStatus::kOk) {
        *record = std::move(probe);
      }
    }
    // A header of zeros: the zeros the writer keeps ahead of its records
    // (docs/formats.md, "Segments") begin here, ending the segment's
    // records. Recovery accepts them only if everything after is zeros.
    const bool zeros_ahead = full && IsAllZero(header) && (!recovery_ || ZerosToEnd(offset_));
    if (header.empty() || zeros_ahead) {
      // Clean end of this segment.
      if (last_segment && !recovery_ && !in_memory_) {
        // A live writer may have started a new segment since we listed them.
        ASSIGN_OR_RETURN(auto now, ListSegments(log_dir_));
        if (now.size() > segments_.size()) segments_ = std::move(now);
        last_segment = segment_ + 1 == segments_.size();
      }
      if (last_segment) return false;
      RETURN_IF_ERROR(OpenSegment(segment_ + 1));
      continue;
    }

    uint64_t expected = last_lsn_ == 0 ? 0 : last_lsn_ + 1;
    if (st == DecodeStatus::kOk && IsLocalRecordType(record->type)) {
      expected = last_lsn_ == 0 ? 0 : last_lsn_;  // local records repeat the LSN before them
    }
    if (st == DecodeStatus::kOk && expected != 0 && record->lsn != expected) {
      return absl::DataLossError(absl::StrCat(
          "change log ", path_, " offset ", offset_, ": LSN ", record->lsn, " follows LSN ",
          last_lsn_, " (records missing or out of order); the slot needs repair from a replica"));
    }
    if (st == DecodeStatus::kOk) {
      offset_ += consumed;
      last_lsn_ = std::max(last_lsn_, record->lsn);
      if (record->lsn < from_lsn_) continue;
      return true;
    }
    // A bad or incomplete record at offset_.
    if (!last_segment) {
      return absl::DataLossError(absl::StrCat(
          "change log ", path_, " offset ", offset_,
          ": damaged record in a sealed segment; the slot needs repair from a replica"));
    }
    if (!recovery_) return false;  // a live writer may be mid-append
    if (!NothingValidAfter(offset_, expected)) {
      return absl::DataLossError(absl::StrCat(
          "change log ", path_, " offset ", offset_,
          ": damaged record followed by valid records; the slot needs repair from a replica"));
    }
    const std::optional<uint64_t> size = SegmentSize();
    if (!size) return ErrnoStatus(errno, "stat", path_);
    torn_tail_ = TornTail{path_, offset_, *size - offset_};
    return false;
  }
  return false;
}

}  // namespace mailrepl
