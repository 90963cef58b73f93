// Order-independent 128-bit digests of mailbox and slot state, kept up to
// date at every mutation so that two slots compare in O(1) when they agree
// and O(mailboxes) when they do not. Each element (a message, a mailbox's
// attributes) is hashed with SHA-256; a set's digest is the sum of its
// elements' first 16 bytes as two 64-bit lanes, mod 2^64. Unlike Cyrus's XOR
// of CRC32s, two equal elements do not cancel (x + x != 0), and removing an
// element subtracts it exactly. See docs/formats.md "Digests".
// Thread-safe: value types and pure functions.
#ifndef MAILREPL_STORE_DIGEST_H_
#define MAILREPL_STORE_DIGEST_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

namespace mailrepl {

struct Digest {
  uint64_t a = 0;
  uint64_t b = 0;

  void Add(const Digest& d) {
    a += d.a;
    b += d.b;
  }
  void Subtract(const Digest& d) {
    a -= d.a;
    b -= d.b;
  }
  bool operator==(const Digest& o) const = default;
  std::string Hex() const;     // 32 lowercase hex digits
  std::string Bytes() const;   // 16 bytes, big-endian a then b
  static bool FromBytes(absl::string_view bytes, Digest* out);
};

// One message's contribution to its mailbox's digest.
Digest MessageDigest(uint32_t uid, absl::string_view guid, const std::vector<std::string>& flags,
                     uint64_t modseq, bool expunged);

// A mailbox's own attributes.
Digest MailboxAttributesDigest(absl::string_view mailbox_id, absl::string_view name,
                               uint32_t uidvalidity, uint32_t last_uid, uint64_t highest_modseq);

// A mailbox's contribution to the slot digest: binds the mailbox digest
// (attributes + messages) to the mailbox id.
Digest MailboxSlotDigest(absl::string_view mailbox_id, const Digest& mailbox_digest);

// A quota's contribution to the slot digest.
Digest QuotaDigest(absl::string_view user, uint64_t storage_limit, uint64_t message_limit);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_DIGEST_H_
