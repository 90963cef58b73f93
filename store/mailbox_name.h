// Mailbox names: validation and the owner they belong to. Names use '/' as the
// hierarchy separator: a user's INBOX is "user/NAME", their folders
// "user/NAME/Folder" (Cyrus's layout with the Unix separator).
// Thread-safe: pure functions.
#ifndef MAILREPL_STORE_MAILBOX_NAME_H_
#define MAILREPL_STORE_MAILBOX_NAME_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace mailrepl {

inline constexpr size_t kMaxMailboxNameBytes = 490;

// OK, or kInvalidArgument saying what is wrong with name: empty, over 490
// bytes, a leading or trailing '/', an empty component, "." or "..",
// control characters or DEL, or not under "user/NAME".
absl::Status ValidateMailboxName(absl::string_view name);

// A flag or keyword: non-empty, at most 100 bytes, printable ASCII without
// space and the IMAP atom specials ()[]{}"%*.
absl::Status ValidateFlag(absl::string_view flag);

// A user name is one mailbox-name component: letters, digits and ".-_@".
absl::Status ValidateUserName(absl::string_view user);

// The owning user ("alice" for "user/alice/Sent"). REQUIRES: a valid name.
std::string MailboxOwner(absl::string_view name);

// "user/alice" for user "alice".
std::string InboxName(absl::string_view user);

// True if name is parent itself or lies below it in the hierarchy.
bool IsSameOrBelow(absl::string_view name, absl::string_view parent);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_MAILBOX_NAME_H_
