// Plain value types describing mail state, shared by the index, the slot,
// snapshots and the tools. Thread-safe: plain data.
#ifndef MAILREPL_STORE_TYPES_H_
#define MAILREPL_STORE_TYPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "store/digest.h"

namespace mailrepl {

struct MailboxInfo {
  std::string id;  // immutable unique id, 32 hex digits
  std::string name;
  std::string owner;
  uint32_t uidvalidity = 0;
  uint32_t last_uid = 0;
  uint64_t highest_modseq = 0;
  uint64_t messages = 0;  // not expunged
  uint64_t bytes = 0;     // not expunged
  Digest message_sum;     // sum of MessageDigest over all message rows

  // Attributes + messages: what two slots compare.
  Digest MailboxDigest() const {
    Digest d = MailboxAttributesDigest(id, name, uidvalidity, last_uid, highest_modseq);
    d.Add(message_sum);
    return d;
  }
};

struct MessageInfo {
  uint32_t uid = 0;
  std::string guid;  // 20 raw bytes
  uint64_t size = 0;
  int64_t internal_date = 0;
  std::vector<std::string> flags;  // sorted, unique
  uint64_t modseq = 0;
  bool expunged = false;
};

struct QuotaInfo {
  std::string user;
  uint64_t storage_limit = 0;  // 0: unlimited
  uint64_t message_limit = 0;  // 0: unlimited
  uint64_t storage_used = 0;
  uint64_t messages_used = 0;
};

struct EpochStart {
  uint64_t epoch = 0;
  uint64_t first_lsn = 0;
  bool operator==(const EpochStart&) const = default;
};

// Flags are stored sorted and unique; system flags start with '\'.
std::vector<std::string> NormalizeFlags(std::vector<std::string> flags);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_TYPES_H_
