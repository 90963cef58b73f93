// Message bodies on disk, one file per GUID: SPOOL/ab/abcdef... (40 hex
// digits of the SHA-1). Bodies are written without fsync: the change log
// holds every new body too, and Slot::Checkpoint() makes the spool durable
// (syncfs) before the log records holding those bodies may be dropped.
// Thread-safe: files are written to a unique temporary name and renamed.
#ifndef MAILREPL_STORE_SPOOL_H_
#define MAILREPL_STORE_SPOOL_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mailrepl {

class Spool {
 public:
  explicit Spool(std::string dir) : dir_(std::move(dir)) {}

  // Creates the directory and its 256 fan-out subdirectories.
  absl::Status Init();
  // Writes the body (atomically: temporary name, then rename). Idempotent.
  absl::Status Write(absl::string_view guid, absl::string_view body);
  absl::StatusOr<std::string> Read(absl::string_view guid) const;
  bool Has(absl::string_view guid) const;
  // Size of the stored file, or an error if it is missing.
  absl::StatusOr<uint64_t> FileSize(absl::string_view guid) const;
  // Makes every file written so far durable (syncfs on the spool's file system).
  absl::Status SyncAll();

  std::string PathFor(absl::string_view guid) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// SHA-1 of bytes, 20 raw bytes (a message's GUID, as Cyrus computes it).
std::string Sha1(absl::string_view bytes);
std::string GuidHex(absl::string_view guid);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_SPOOL_H_
