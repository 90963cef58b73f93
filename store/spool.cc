#include "store/spool.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace mailrepl {

std::string Sha1(absl::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha1(), nullptr);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string GuidHex(absl::string_view guid) { return absl::BytesToHexString(guid); }

std::string Spool::PathFor(absl::string_view guid) const {
  std::string hex = GuidHex(guid);
  return absl::StrCat(dir_, "/", hex.substr(0, 2), "/", hex);
}

absl::Status Spool::Init() {
  RETURN_IF_ERROR(MakeDirs(dir_));
  for (int i = 0; i < 256; ++i) {
    std::string sub = absl::StrFormat("%s/%02x", dir_, i);
    if (::mkdir(sub.c_str(), 0750) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, "mkdir", sub);
    }
  }
  return SyncDir(dir_);
}

absl::Status Spool::Write(absl::string_view guid, absl::string_view body) {
  static std::atomic<uint64_t> counter{0};
  std::string path = PathFor(guid);
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "create body file", tmp);
  absl::Status s = WriteAll(fd, body, tmp);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = ErrnoStatus(errno, "rename body file to " + path, tmp);
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

absl::StatusOr<std::string> Spool::Read(absl::string_view guid) const {
  return ReadFile(PathFor(guid));
}

bool Spool::Has(absl::string_view guid) const {
  struct stat st;
  return ::stat(PathFor(guid).c_str(), &st) == 0;
}

absl::StatusOr<uint64_t> Spool::FileSize(absl::string_view guid) const {
  std::string path = PathFor(guid);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat body file", path);
  return static_cast<uint64_t>(st.st_size);
}

absl::Status Spool::SyncAll() {
  int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open spool", dir_);
  int rc = ::syncfs(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, "syncfs", dir_);
  return absl::OkStatus();
}

}  // namespace mailrepl
