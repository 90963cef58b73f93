// The identity file at the root of every slot directory: which cluster,
// store and slot this data belongs to. Checked on every open, so a slot can
// never be opened as the wrong store. Format: docs/formats.md "Identity file".
// Thread-safe: value type and stateless functions.
#ifndef MAILREPL_STORE_IDENTITY_H_
#define MAILREPL_STORE_IDENTITY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mailrepl {

struct SlotIdentity {
  std::string cluster_id;
  uint64_t store_id = 0;
  uint64_t slot_id = 0;
  int64_t created_unix = 0;

  bool operator==(const SlotIdentity&) const = default;
};

std::string EncodeIdentity(const SlotIdentity& id);
// kDataLoss if the file is damaged (bad checksum or syntax).
absl::StatusOr<SlotIdentity> DecodeIdentity(const std::string& text, const std::string& path);

absl::Status WriteIdentity(const std::string& path, const SlotIdentity& id);
absl::StatusOr<SlotIdentity> ReadIdentity(const std::string& path);

// A cluster id is 1..64 characters of letters, digits, '-', '_', '.'.
absl::Status ValidateClusterId(const std::string& id);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_IDENTITY_H_
