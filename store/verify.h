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
  uint64_t mailboxes = 0;
  // One line per problem found, naming the file, mailbox or GUID.
  std::vector<std::string> problems;
  bool clean() const { return problems.empty(); }
};

// Checks that every log record is intact, every body hashes to its GUID and
// has its recorded size, and that an index rebuilt from the log (and base
// snapshot) has exactly the slot's digests. An error status means the check
// could not run; damage found is reported in problems.
absl::StatusOr<VerifyReport> VerifySlot(Slot& slot);

// Rebuilds the index of a closed slot from its log (and base snapshot) and
// spool, and records the repair in the log. Returns what Open() did.
absl::StatusOr<RecoveryReport> ReconstructIndex(const SlotPaths& paths,
                                                const SlotOptions& options);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_VERIFY_H_
