#include "store/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "store/log_format.h"

namespace mailrepl {
namespace {

uint32_t LoadU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // little-endian hosts only, as everywhere in the store
}

void StoreU32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }

// The CRC of an entry: over its length, GUID and body.
uint32_t EntryCrc(const char* header, absl::string_view body) {
  uint32_t crc = crc32c::Extend(0, header + 8, kPackEntryHeaderSize - 8);
  return crc32c::Mask(crc32c::Extend(crc, body.data(), body.size()));
}

absl::Status PreadAll(int fd, char* buf, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read pack", path);
    }
    if (r == 0) return absl::OutOfRangeError(absl::StrCat("pack ", path, " ends early"));
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

// An open pack file, read-only, for scans.
struct PackReader {
  int fd = -1;
  uint64_t size = 0;
  std::string path;
  ~PackReader() {
    if (fd >= 0) ::close(fd);
  }
  absl::Status Open(const std::string& p) {
    path = p;
    fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open pack", p);
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat pack", p);
    size = static_cast<uint64_t>(st.st_size);
    return absl::OkStatus();
  }
  // The entry header at offset, if it is plausible: magic, a length within
  // the limit, and an entry that ends inside the file.
  bool Header(uint64_t offset, char* header, uint32_t* length) const {
    if (offset + kPackEntryHeaderSize > size) return false;
    if (!PreadAll(fd, header, kPackEntryHeaderSize, offset, path).ok()) return false;
    if (LoadU32(header) != kPackEntryMagic) return false;
    *length = LoadU32(header + 8);
    return *length <= kMaxRecordPayload && offset + kPackEntryHeaderSize + *length <= size;
  }
  // The whole entry at offset, if its CRC checks out.
  bool Entry(uint64_t offset, std::string* guid, std::string* body) const {
    char header[kPackEntryHeaderSize];
    uint32_t length = 0;
    if (!Header(offset, header, &length)) return false;
    body->resize(length);
    if (!PreadAll(fd, body->data(), length, offset + kPackEntryHeaderSize, path).ok()) {
      return false;
    }
    if (LoadU32(header + 4) != EntryCrc(header, *body)) return false;
    guid->assign(header + 12, 20);
    return true;
  }
  // The offset of the first valid entry at or after from, if any.
  std::optional<uint64_t> NextValid(uint64_t from) const {
    // At most 1 MiB at a time, and no more than the file has after from:
    // a scan calls this once per damaged stretch, often near the end.
    std::string chunk(static_cast<size_t>(std::min<uint64_t>(1 << 20, size - std::min(size, from))),
                      '\0');
    std::string guid, body;
    const char magic[4] = {'M', 'B', 'Y', '1'};
    for (uint64_t base = from; base + 4 <= size;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - base));
      if (!PreadAll(fd, chunk.data(), n, base, path).ok()) return std::nullopt;
      for (size_t i = 0; i + 4 <= n; ++i) {
        if (std::memcmp(chunk.data() + i, magic, 4) == 0 && Entry(base + i, &guid, &body)) {
          return base + i;
        }
      }
      if (n < 4) break;
      base += n - 3;
    }
    return std::nullopt;
  }
};

}  // namespace

std::string Sha1(absl::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha1(), nullptr);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string GuidHex(absl::string_view guid) { return absl::BytesToHexString(guid); }

absl::StatusOr<std::vector<uint32_t>> ListPacks(const std::string& packs_dir) {
  DIR* d = ::opendir(packs_dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "open spool pack directory", packs_dir);
  std::vector<uint32_t> out;
  while (struct dirent* e = ::readdir(d)) {
    absl::string_view name = e->d_name;
    uint32_t n = 0;
    if (name.size() == 13 && absl::EndsWith(name, ".pack") &&
        absl::SimpleAtoi(name.substr(0, 8), &n) && n > 0) {
      out.push_back(n);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Spool::Spool(std::string dir, uint64_t pack_bytes)
    : dir_(std::move(dir)), pack_bytes_(pack_bytes) {}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

std::string Spool::PackPath(uint32_t pack) const {
  return absl::StrFormat("%s/packs/%08u.pack", dir_, pack);
}

absl::Status Spool::Init() {
  RETURN_IF_ERROR(MakeDirs(packs_dir()));
  RETURN_IF_ERROR(SyncDir(packs_dir()));
  return SyncDir(dir_);
}

absl::Status Spool::OpenPackLocked(uint32_t pack) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  const std::string path = PackPath(pack);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoStatus(errno, "open pack", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "stat pack", path);
  }
  fd_ = fd;
  pack_ = pack;
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) dir_unsynced_ = true;  // possibly a new directory entry
  return absl::OkStatus();
}

absl::StatusOr<std::optional<PackTornTail>> Spool::OpenForAppend() {
  MutexLock l(mu_);
  ASSIGN_OR_RETURN(std::vector<uint32_t> packs, ListPacks(packs_dir()));
  if (packs.empty()) {
    RETURN_IF_ERROR(OpenPackLocked(1));
    return std::optional<PackTornTail>();
  }
  const uint32_t last = packs.back();
  std::optional<PackTornTail> torn;
  {
    PackReader r;
    RETURN_IF_ERROR(r.Open(PackPath(last)));
    uint64_t offset = 0;
    std::string guid, body;
    while (offset < r.size && r.Entry(offset, &guid, &body)) {
      offset += kPackEntryHeaderSize + body.size();
    }
    if (offset < r.size) {
      if (auto next = r.NextValid(offset + 1)) {
        // Damage, not a torn tail: keep the file as it is (its bodies are
        // checked where they are read, and verify reports them).
        LogLine(Severity::kError, "spool pack damaged",
                Kv("file", r.path) + Kv("offset", offset) + Kv("next_valid_entry", *next));
      } else {
        if (::truncate(r.path.c_str(), static_cast<off_t>(offset)) != 0) {
          return ErrnoStatus(errno, "truncate torn tail of", r.path);
        }
        RETURN_IF_ERROR(SyncFile(r.path));
        torn = PackTornTail{r.path, offset, r.size - offset};
        LogLine(Severity::kWarning, "spool pack torn tail truncated",
                Kv("file", r.path) + Kv("offset", offset) +
                    Kv("bytes_dropped", r.size - offset));
      }
    }
  }
  RETURN_IF_ERROR(OpenPackLocked(last));
  return torn;
}

absl::StatusOr<BodyLocation> Spool::Append(absl::string_view guid, absl::string_view body) {
  if (guid.size() != 20) return absl::InvalidArgumentError("a GUID is 20 bytes");
  if (body.size() > kMaxRecordPayload) {
    return absl::InvalidArgumentError(absl::StrCat("body of ", body.size(), " bytes is too big"));
  }
  char header[kPackEntryHeaderSize];
  StoreU32(header, kPackEntryMagic);
  StoreU32(header + 8, static_cast<uint32_t>(body.size()));
  std::memcpy(header + 12, guid.data(), 20);
  StoreU32(header + 4, EntryCrc(header, body));
  const uint64_t entry = kPackEntryHeaderSize + body.size();

  MutexLock l(mu_);
  if (fd_ < 0) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> packs, ListPacks(packs_dir()));
    RETURN_IF_ERROR(OpenPackLocked(packs.empty() ? 1 : packs.back()));
  }
  if (size_ > 0 && size_ + entry > pack_bytes_) RETURN_IF_ERROR(OpenPackLocked(pack_ + 1));
  const std::string path = PackPath(pack_);
  struct iovec iov[2] = {{header, kPackEntryHeaderSize},
                         {const_cast<char*>(body.data()), body.size()}};
  int idx = 0;
  uint64_t done = 0;
  while (done < entry) {
    ssize_t n = ::writev(fd_, iov + idx, 2 - idx);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoStatus(errno, "append to pack", path);
      // Cut back a partial entry, so the pack stays a sequence of entries.
      if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
        LogLine(Severity::kError, "could not cut back pack after a failed append",
                Kv("file", path) + Kv("offset", size_));
      }
      return s;
    }
    done += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (idx < 2 && left >= iov[idx].iov_len) {
      left -= iov[idx].iov_len;
      ++idx;
    }
    if (idx < 2) {
      iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + left;
      iov[idx].iov_len -= left;
    }
  }
  BodyLocation loc{pack_, size_};
  size_ += entry;
  unsynced_.insert(pack_);
  return loc;
}

absl::StatusOr<std::string> Spool::Read(absl::string_view guid, const BodyLocation& loc) const {
  const std::string path = PackPath(loc.pack);
  auto damaged = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(
        "body ", GuidHex(guid), " in pack ", path, " offset ", loc.offset, " is damaged (", why,
        "); run 'mailctl verify' and resync the slot from a replica"));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return damaged("the pack file is missing");
    return ErrnoStatus(errno, "open pack", path);
  }
  char header[kPackEntryHeaderSize];
  absl::Status s = PreadAll(fd, header, kPackEntryHeaderSize, loc.offset, path);
  std::string body;
  if (s.ok()) {
    if (LoadU32(header) != kPackEntryMagic) {
      ::close(fd);
      return damaged("no entry header there");
    }
    if (absl::string_view(header + 12, 20) != guid) {
      ::close(fd);
      return damaged("the entry holds another GUID");
    }
    const uint32_t length = LoadU32(header + 8);
    if (length > kMaxRecordPayload) {
      ::close(fd);
      return damaged("bad length");
    }
    body.resize(length);
    s = PreadAll(fd, body.data(), length, loc.offset + kPackEntryHeaderSize, path);
  }
  ::close(fd);
  if (absl::IsOutOfRange(s)) return damaged("the pack ends inside the entry");
  RETURN_IF_ERROR(s);
  if (LoadU32(header + 4) != EntryCrc(header, body)) return damaged("CRC mismatch");
  return body;
}

absl::Status Spool::Scan(
    const std::function<absl::Status(const std::string&, uint64_t, const BodyLocation&)>& fn,
    const std::function<void(const std::string&, uint64_t)>& damaged) const {
  ASSIGN_OR_RETURN(std::vector<uint32_t> packs, ListPacks(packs_dir()));
  std::string guid, body;
  for (uint32_t pack : packs) {
    PackReader r;
    RETURN_IF_ERROR(r.Open(PackPath(pack)));
    uint64_t offset = 0;
    while (offset < r.size) {
      if (r.Entry(offset, &guid, &body)) {
        RETURN_IF_ERROR(fn(guid, body.size(), BodyLocation{pack, offset}));
        offset += kPackEntryHeaderSize + body.size();
        continue;
      }
      damaged(r.path, offset);
      std::optional<uint64_t> next = r.NextValid(offset + 1);
      if (!next) break;
      offset = *next;
    }
  }
  return absl::OkStatus();
}

void Spool::StartWriteback() {
  MutexLock l(mu_);
  if (fd_ >= 0) ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
}

absl::Status Spool::Sync() {
  // One Sync at a time: a second caller must not return while the packs it
  // needs are still being synced by the first.
  MutexLock serial(sync_mu_);
  std::set<uint32_t> packs;
  bool dir = false;
  {
    MutexLock l(mu_);
    packs.swap(unsynced_);
    dir = std::exchange(dir_unsynced_, false);
  }
  absl::Status s;
  for (uint32_t pack : packs) {
    const std::string path = PackPath(pack);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      s = ErrnoStatus(errno, "open pack", path);
      break;
    }
    int rc = ::fdatasync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) {
      s = ErrnoStatus(err, "fdatasync pack", path);
      break;
    }
  }
  if (s.ok() && dir) s = SyncDir(packs_dir());
  if (!s.ok()) {
    MutexLock l(mu_);
    unsynced_.insert(packs.begin(), packs.end());
    dir_unsynced_ = dir_unsynced_ || dir;
  }
  return s;
}

}  // namespace mailrepl
