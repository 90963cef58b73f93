// libFuzzer target for the spool's pack reader (store/spool.h): the scan
// of the last pack at open (Spool::OpenForAppend: torn tail cut off, or
// damage left alone), the scan of every pack (Spool::Scan, rebuilding
// body locations) and reading bodies back (Spool::Read). The packs are
// files in a directory on tmpfs (/dev/shm), new for every input: the Spool
// reads and truncates files by path, and this keeps its code unchanged.
// Built and run by scripts/fuzz.sh.
//
// Input: one control byte, then up to 4 packs (00000001.pack, ...)
// separated by the bytes "%%PACK%%".
//   bit 0: repair the CRC of each entry at the start of each pack (walking
//          the declared lengths), so that mutations reach the scans' logic;
//          clear: the framing itself.
//   bit 1: also make each of those entries' GUID the SHA-1 of its body.
//
// Invariants: Scan visits entries in order, without overlap, inside the
// file, each one whose magic, length and CRC check out, and Read returns
// exactly its body; Read anywhere else returns the bytes there or
// kDataLoss naming the pack and offset; OpenForAppend cuts a torn tail
// only at the end of the valid entries, leaving every valid entry, and
// leaves a damaged pack as it is; an append after it reads back.
//
// Seeds: test/fuzz/corpus/pack_fuzzer/, made by the project's own writer
// (Spool::Append through a slot): build-fuzz/bin/make_disk_seeds
// test/fuzz/corpus (test/fuzz/make_disk_seeds.cc; flock /tmp/mr-build.lock
// cmake --build build-fuzz --target make_disk_seeds).
#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "store/log_format.h"
#include "store/spool.h"
#include "test/fuzz/disk_fuzz.h"

namespace mailrepl {
namespace {

using fuzz::Check;
using fuzz::GetFixed32;

constexpr char kSeparator[] = "%%PACK%%";
constexpr size_t kMaxPacks = 4;
constexpr size_t kMaxReads = 64;

uint32_t EntryCrc(absl::string_view entry) {
  return crc32c::Mask(crc32c::Value(entry.substr(8)));
}

// Rewrites CRC (and GUID) of each entry at the start of pack.
void Repair(std::string* pack, bool guids) {
  size_t pos = 0;
  while (pack->size() - pos >= kPackEntryHeaderSize && GetFixed32(*pack, pos) == kPackEntryMagic) {
    const uint32_t length = GetFixed32(*pack, pos + 8);
    if (length > pack->size() - pos - kPackEntryHeaderSize) break;
    if (guids) {
      const std::string guid =
          Sha1(absl::string_view(*pack).substr(pos + kPackEntryHeaderSize, length));
      pack->replace(pos + 12, 20, guid);
    }
    fuzz::PutFixed32(pack, pos + 4,
                     EntryCrc(absl::string_view(*pack).substr(pos, kPackEntryHeaderSize + length)));
    pos += kPackEntryHeaderSize + length;
  }
}

// Whether a whole, valid entry starts at offset of pack.
bool ValidEntry(absl::string_view pack, uint64_t offset) {
  if (offset > pack.size() || pack.size() - offset < kPackEntryHeaderSize) return false;
  if (GetFixed32(pack, offset) != kPackEntryMagic) return false;
  const uint32_t length = GetFixed32(pack, offset + 8);
  if (length > kMaxRecordPayload || length > pack.size() - offset - kPackEntryHeaderSize) {
    return false;
  }
  return GetFixed32(pack, offset + 4) ==
         EntryCrc(pack.substr(offset, kPackEntryHeaderSize + length));
}

struct Found {
  std::string guid;
  uint64_t size;
  BodyLocation loc;
};

std::vector<Found> ScanAll(const Spool& spool, const std::vector<std::string>& packs) {
  std::vector<Found> found;
  absl::Status s = spool.Scan(
      [&](const std::string& guid, uint64_t size, const BodyLocation& loc) {
        found.push_back({guid, size, loc});
        return absl::OkStatus();
      },
      [&](const std::string& path, uint64_t offset) {
        bool known = false;
        for (size_t i = 0; i < packs.size(); ++i) {
          if (path == spool.PackPath(static_cast<uint32_t>(i + 1))) {
            known = true;
            Check(offset < packs[i].size(), "damage is reported inside the pack");
            Check(!ValidEntry(packs[i], offset), "damage is not reported at a valid entry");
          }
        }
        Check(known, "damage names a pack");
      });
  Check(s.ok(), "a scan of readable packs succeeds");
  for (size_t i = 0; i < found.size(); ++i) {
    const Found& f = found[i];
    Check(f.loc.pack >= 1 && f.loc.pack <= packs.size(), "a scanned entry is in a pack");
    const std::string& pack = packs[f.loc.pack - 1];
    Check(ValidEntry(pack, f.loc.offset), "a scanned entry is valid");
    Check(f.size == GetFixed32(pack, f.loc.offset + 8) &&
              f.guid == pack.substr(f.loc.offset + 12, 20),
          "a scanned entry has its header's length and GUID");
    if (i > 0 && found[i - 1].loc.pack == f.loc.pack) {
      Check(found[i - 1].loc.offset + kPackEntryHeaderSize + found[i - 1].size <= f.loc.offset,
            "scanned entries come in order without overlap");
    } else if (i > 0) {
      Check(found[i - 1].loc.pack < f.loc.pack, "packs are scanned in order");
    }
  }
  return found;
}

// Spool::Read at loc, checked against the bytes.
void CheckRead(const Spool& spool, const std::vector<std::string>& packs, absl::string_view guid,
               const BodyLocation& loc) {
  absl::StatusOr<std::string> body = spool.Read(guid, loc);
  const bool exists = loc.pack >= 1 && loc.pack <= packs.size();
  if (body.ok()) {
    Check(exists, "a body is read from a pack that exists");
    const std::string& pack = packs[loc.pack - 1];
    Check(ValidEntry(pack, loc.offset), "a body read is a valid entry");
    Check(pack.substr(loc.offset + 12, 20) == guid, "a body read has the GUID asked for");
    Check(*body == pack.substr(loc.offset + kPackEntryHeaderSize, body->size()) &&
              body->size() == GetFixed32(pack, loc.offset + 8),
          "a body read is the entry's bytes");
    return;
  }
  Check(body.status().code() == absl::StatusCode::kDataLoss, "a bad body is kDataLoss");
  Check(absl::StrContains(body.status().message(), spool.PackPath(loc.pack)) &&
            absl::StrContains(body.status().message(), "offset"),
        "a bad body names its pack and offset");
  if (exists && guid.size() == 20) {
    const std::string& pack = packs[loc.pack - 1];
    Check(!ValidEntry(pack, loc.offset) || pack.substr(loc.offset + 12, 20) != guid,
          "a valid entry with the GUID asked for reads");
  }
}

void WritePack(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  Check(fd >= 0, "a pack created");
  Check(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()),
        "a pack written");
  ::close(fd);
}

// OpenForAppend logs torn tails and damage on stderr: kept out of the
// fuzzer's output (sanitizer reports keep their own copy of stderr).
class QuietStderr {
 public:
  QuietStderr() : saved_(::dup(2)) {
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    ::dup2(null, 2);
    ::close(null);
  }
  ~QuietStderr() {
    ::dup2(saved_, 2);
    ::close(saved_);
  }

 private:
  int saved_;
};

}  // namespace
}  // namespace mailrepl

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Sanitizer reports go to a copy of stderr, also while QuietStderr mutes it.
  static int report_fd = ::dup(2);
  __sanitizer_set_report_fd(reinterpret_cast<void*>(static_cast<intptr_t>(report_fd)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mailrepl;
  if (size == 0) return 0;
  static const std::string dir = fuzz::ScratchDir() + "/spool";
  const uint8_t control = data[0];
  std::vector<std::string> packs = fuzz::Split(
      absl::string_view(reinterpret_cast<const char*>(data + 1), size - 1), kSeparator);
  if (packs.size() > kMaxPacks) packs.resize(kMaxPacks);
  if ((control & 1) != 0) {
    for (std::string& p : packs) Repair(&p, (control & 2) != 0);
  }
  fuzz::ClearDir(dir);
  Spool spool(dir);
  Check(spool.Init().ok(), "a spool on tmpfs");
  for (size_t i = 0; i < packs.size(); ++i) {
    WritePack(spool.PackPath(static_cast<uint32_t>(i + 1)), packs[i]);
  }

  // Scan, and read every entry it finds.
  const std::vector<Found> before = ScanAll(spool, packs);
  for (const Found& f : before) {
    absl::StatusOr<std::string> body = spool.Read(f.guid, f.loc);
    Check(body.ok() && body->size() == f.size, "every scanned entry reads");
  }
  // Reads wherever an entry might start, with its GUID and another.
  size_t reads = 0;
  for (size_t p = 0; p < packs.size(); ++p) {
    const std::string& pack = packs[p];
    for (size_t at = pack.find("MBY1"); at != std::string::npos && reads < kMaxReads;
         at = pack.find("MBY1", at + 1), ++reads) {
      const BodyLocation loc{static_cast<uint32_t>(p + 1), at};
      const std::string guid =
          pack.size() - at >= 32 ? pack.substr(at + 12, 20) : std::string(20, 'g');
      CheckRead(spool, packs, guid, loc);
      CheckRead(spool, packs, std::string(20, '\0'), loc);
    }
    CheckRead(spool, packs, std::string(20, '\0'), {static_cast<uint32_t>(p + 1), pack.size()});
  }
  CheckRead(spool, packs, std::string(20, '\0'),
            {static_cast<uint32_t>(packs.size() + 1), 0});

  // The scan at open: the last pack's torn tail is cut off, damage kept.
  const std::string& last = packs.back();
  uint64_t chain = 0;  // end of the valid entries from the start
  while (ValidEntry(last, chain)) chain += kPackEntryHeaderSize + GetFixed32(last, chain + 8);
  absl::StatusOr<std::optional<PackTornTail>> torn;
  {
    QuietStderr quiet;
    torn = spool.OpenForAppend();
  }
  Check(torn.ok(), "opening readable packs succeeds");
  const std::string last_path = spool.PackPath(static_cast<uint32_t>(packs.size()));
  auto now = ReadFile(last_path);
  Check(now.ok(), "the last pack is still there");
  if (torn->has_value()) {
    const PackTornTail& t = **torn;
    Check(t.path == last_path, "a torn tail is in the last pack");
    Check(t.offset == chain, "a torn tail starts where the valid entries end");
    Check(t.bytes_dropped > 0 && t.offset + t.bytes_dropped == last.size(),
          "a torn tail spans to the end of the pack");
    Check(*now == last.substr(0, t.offset), "a torn tail is cut off, the rest kept");
    for (const Found& f : before) {
      if (f.loc.pack == packs.size()) {
        Check(f.loc.offset + kPackEntryHeaderSize + f.size <= t.offset,
              "no valid entry is cut off as a torn tail");
      }
    }
  } else {
    Check(*now == last, "a pack without a torn tail is left as it is");
  }
  packs.back() = *now;
  const std::vector<Found> after = ScanAll(spool, packs);
  size_t kept = 0;
  for (const Found& f : before) {
    if (f.loc.pack != packs.size() || f.loc.offset < packs.back().size()) ++kept;
  }
  Check(after.size() == kept, "opening keeps every valid entry");

  // An append goes after what is left and reads back.
  const std::string body = "appended after open";
  absl::StatusOr<BodyLocation> loc = spool.Append(Sha1(body), body);
  Check(loc.ok(), "an append after open succeeds");
  Check(loc->pack == packs.size() && loc->offset == packs.back().size(),
        "an append goes at the end of the last pack");
  absl::StatusOr<std::string> back = spool.Read(Sha1(body), *loc);
  Check(back.ok() && *back == body, "an appended body reads back");
  return 0;
}
