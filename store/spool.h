// Message bodies on disk, once per GUID, in append-only pack files:
// SPOOL/packs/NNNNNNNN.pack. Each body is one entry (header with magic,
// CRC32C, length and GUID, then the bytes; docs/formats.md, "Spool"). Where
// an entry is (pack number, offset) is kept by the caller, in the index's
// blobs table. Appends are not fsync'd: the change log holds every new body
// too, and Sync() (at checkpoints) makes the packs durable before the log
// records holding those bodies may be dropped.
// Thread-safe: appends are serialized; reads use pread on their own fd.
#ifndef MAILREPL_STORE_SPOOL_H_
#define MAILREPL_STORE_SPOOL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"

namespace mailrepl {

// Entry header: magic, masked CRC32C, body length, GUID.
inline constexpr uint32_t kPackEntryMagic = 0x3159424d;  // "MBY1" little-endian
inline constexpr size_t kPackEntryHeaderSize = 32;
inline constexpr uint64_t kDefaultPackBytes = 64ull << 20;  // the last is checked at open

// Where a body is: the offset of its entry's header in pack file `pack`.
struct BodyLocation {
  uint32_t pack = 0;
  uint64_t offset = 0;
  bool operator==(const BodyLocation&) const = default;
};

// A body just appended to a pack.
struct StoredBody {
  std::string guid;
  uint64_t size = 0;
  BodyLocation location;
};

// A torn end of the last pack, cut off when the slot opened.
struct PackTornTail {
  std::string path;
  uint64_t offset = 0;         // first byte not part of a valid entry
  uint64_t bytes_dropped = 0;  // from offset to the end of the file
};

class Spool {
 public:
  explicit Spool(std::string dir, uint64_t pack_bytes = kDefaultPackBytes);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Creates the directory and SPOOL/packs.
  absl::Status Init();
  // Opens the last pack for appending (recovery, by the slot's one writer),
  // checking each of its entries. Entries at its end that are cut short or
  // fail their CRC, with no valid entry after them, are a torn tail: the
  // file is truncated there. A bad entry followed by valid ones is damage:
  // logged, and left for verify to report.
  absl::StatusOr<std::optional<PackTornTail>> OpenForAppend();
  // Appends one entry at the end of the current pack (a new pack once the
  // current one holds pack_bytes). Not synced.
  absl::StatusOr<BodyLocation> Append(absl::string_view guid, absl::string_view body);
  // Reads the body at loc and checks the entry: magic, GUID, length, CRC.
  // kDataLoss naming the pack file and offset when it does not check out.
  absl::StatusOr<std::string> Read(absl::string_view guid, const BodyLocation& loc) const;
  // Visits every valid entry of every pack in order (rebuilding locations).
  // Damaged stretches are skipped (to the next valid entry) and reported
  // through damaged(path, offset).
  absl::Status Scan(
      const std::function<absl::Status(const std::string& guid, uint64_t size,
                                       const BodyLocation& loc)>& fn,
      const std::function<void(const std::string& path, uint64_t offset)>& damaged) const;
  // Starts writeback of what was appended so far, without waiting.
  void StartWriteback();
  // Makes every entry appended so far durable (fdatasync of the packs
  // written since the last Sync, fsync of packs/ after a new pack).
  absl::Status Sync();

  std::string PackPath(uint32_t pack) const;
  std::string packs_dir() const { return dir_ + "/packs"; }
  const std::string& dir() const { return dir_; }

 private:
  absl::Status OpenPackLocked(uint32_t pack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const uint64_t pack_bytes_;
  Mutex sync_mu_;  // serializes Sync(); taken before mu_
  Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;  // the current pack, O_APPEND
  uint32_t pack_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<uint32_t> unsynced_ ABSL_GUARDED_BY(mu_);  // packs appended to since Sync()
  bool dir_unsynced_ ABSL_GUARDED_BY(mu_) = false;    // a pack was created since Sync()
};

// Pack numbers present in SPOOL/packs, ascending.
absl::StatusOr<std::vector<uint32_t>> ListPacks(const std::string& packs_dir);

// SHA-1 of bytes, 20 raw bytes (a message's GUID, as Cyrus computes it).
std::string Sha1(absl::string_view bytes);
std::string GuidHex(absl::string_view guid);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_SPOOL_H_
