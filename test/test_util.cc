#include "test/test_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "store/log_reader.h"

namespace mailrepl::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = absl::StrCat(base ? base : "/tmp", "/mailrepl-test-XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::unique_ptr<Slot> NewSlot(const std::string& dir, SlotOptions options) {
  SlotIdentity id{"test", 1, 1, 1700000000};
  absl::Status s = Slot::Init(SlotPaths::Under(dir), id);
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
  return ReopenSlot(dir, options);
}

std::unique_ptr<Slot> ReopenSlot(const std::string& dir, SlotOptions options) {
  auto slot = Slot::Open(SlotPaths::Under(dir), options);
  if (!slot.ok()) throw std::runtime_error(std::string(slot.status().message()));
  return std::move(*slot);
}

std::string TestMessage(int n, size_t body_bytes) {
  std::string m = absl::StrCat("From: sender@example.test\r\nTo: user@example.test\r\n",
                               "Subject: test ", n, "\r\nMessage-ID: <t", n,
                               "@example.test>\r\n\r\n");
  while (m.size() < body_bytes) absl::StrAppend(&m, "line ", n, " of the body\r\n");
  return m;
}

void WriteByteAt(const std::string& path, uint64_t offset, char c) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) throw std::runtime_error("open " + path);
  if (::pwrite(fd, &c, 1, static_cast<off_t>(offset)) != 1) throw std::runtime_error("pwrite");
  ::close(fd);
}

void FlipByte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) throw std::runtime_error("open " + path);
  unsigned char c;
  if (::pread(fd, &c, 1, static_cast<off_t>(offset)) != 1) throw std::runtime_error("pread");
  c ^= 0x40;
  if (::pwrite(fd, &c, 1, static_cast<off_t>(offset)) != 1) throw std::runtime_error("pwrite");
  ::close(fd);
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

void TruncateFile(const std::string& path, uint64_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) {
    throw std::runtime_error("truncate " + path);
  }
}

void AppendBytes(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  if (fd < 0) throw std::runtime_error("open " + path);
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    throw std::runtime_error("write " + path);
  }
  ::close(fd);
}

PackedBody FindPackedBody(Slot& slot, const std::string& guid) {
  if (!slot.FlushBodies().ok()) throw std::runtime_error("bodies not flushed");
  return slot.WithIndex([&](Index& ix, Spool& sp) {
    auto loc = ix.BlobLocation(guid);
    if (!loc.ok() || !loc->has_value()) {
      throw std::runtime_error("body " + GuidHex(guid) + " is not in the spool");
    }
    const BodyLocation& l = **loc;
    return PackedBody{sp.PackPath(l.pack), l.offset, l.offset + kPackEntryHeaderSize};
  });
}

std::string LastSegment(const std::string& slot_dir) {
  auto segs = ListSegments(slot_dir + "/log");
  if (!segs.ok() || segs->empty()) throw std::runtime_error("no log segment in " + slot_dir);
  return segs->back().path;
}

std::vector<LogRecord> RecordsFrom(const std::string& slot_dir, uint64_t from) {
  auto reader = LogReader::Open(slot_dir + "/log", from, false);
  if (!reader.ok()) throw std::runtime_error(std::string(reader.status().message()));
  std::vector<LogRecord> out;
  LogRecord r;
  while (reader->Next(&r).value()) {
    if (!IsLocalRecordType(r.type) && r.lsn >= from) out.push_back(r);
  }
  return out;
}

}  // namespace mailrepl::testing
