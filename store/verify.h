// Offline consistency checks of one slot and the index rebuild, behind
// `mailctl verify` and `mailctl reconstruct`. Thread-safe as the Slot is;
// reconstruct needs the slot closed.
#ifndef MAILREPL_STORE_VERIFY_H_
#define MAILREPL_STORE_VERIFY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/slot.h"

namespace mailrepl {

struct VerifyReport {
  uint64_t records = 0;   // log records read
  uint64_t blobs = 0;     // bodies hashed
  uint64_t bytes = 0;     // their bytes
  uint64_t mailboxes = 0;
  // One line per problem found, naming the file, mailbox or GUID.
  std::vector<std::string> problems;
  // Bodies missing from the spool or not hashing to their GUID (not in
  // problems): the GUID and what is wrong, naming pack file and offset.
  struct BadBody {
    std::string guid;
    std::string problem;
  };
  std::vector<BadBody> bad_bodies;
  bool clean() const { return problems.empty() && bad_bodies.empty(); }
};

struct VerifyOptions {
  // Body reads are paced to this rate (a nightly check must not starve
  // production I/O); 0: as fast as the disk goes.
  double max_bytes_per_second = 0;
};

// Checks that every log record is intact, every body hashes to its GUID and
// has its recorded size, and that an index rebuilt from the log (and base
// snapshot) has exactly the slot's digests. An error status means the check
// could not run; damage found is reported in problems.
// Works on a slot that takes writes: the bodies are hashed outside the
// index lock, and index and log are compared only if no write came between.
absl::StatusOr<VerifyReport> VerifySlot(Slot& slot, const VerifyOptions& options = {});

// Rebuilds the index of a closed slot from its log (and base snapshot) and
// spool, and records the repair in the log. Returns what Open() did.
absl::StatusOr<RecoveryReport> ReconstructIndex(const SlotPaths& paths,
                                                const SlotOptions& options);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_VERIFY_H_
