// The command-line flags sync_client and sync_server share: where the slot
// lives and where the shared secret is. Thread-compatible.
#ifndef MAILREPL_SYNCCLIENT_COMMON_FLAGS_H_
#define MAILREPL_SYNCCLIENT_COMMON_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "store/slot.h"

namespace mailrepl::sync {

struct CommonFlags {
  std::string slot, meta, spool, secret_file;

  // If argv[*i] is --slot, --meta, --spool or --secret-file, takes it and its
  // value (advancing *i) and returns true. A missing value is kInvalidArgument.
  absl::StatusOr<bool> Consume(int argc, char** argv, int* i);
  // kInvalidArgument unless --slot and --secret-file were given.
  absl::Status Check() const;
  SlotPaths Paths() const;
};

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_COMMON_FLAGS_H_
