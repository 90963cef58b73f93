#include "syncclient/common_flags.h"

#include "absl/strings/str_cat.h"

namespace mailrepl::sync {

absl::StatusOr<bool> CommonFlags::Consume(int argc, char** argv, int* i) {
  const std::string a = argv[*i];
  std::string* target = a == "--slot"          ? &slot
                        : a == "--meta"        ? &meta
                        : a == "--spool"       ? &spool
                        : a == "--secret-file" ? &secret_file
                                               : nullptr;
  if (target == nullptr) return false;
  if (*i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
  *target = argv[++*i];
  return true;
}

absl::Status CommonFlags::Check() const {
  if (slot.empty() || secret_file.empty()) {
    return absl::InvalidArgumentError("--slot and --secret-file are required");
  }
  return absl::OkStatus();
}

SlotPaths CommonFlags::Paths() const {
  SlotPaths paths = SlotPaths::Under(slot);
  if (!meta.empty()) paths.meta = meta;
  if (!spool.empty()) paths.spool = spool;
  return paths;
}

}  // namespace mailrepl::sync
