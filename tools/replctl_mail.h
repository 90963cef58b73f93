// File: tools/replctl_mail.h
//
// `replctl mail`: read-only views of one user's mail on a live cluster,
// through the client API of a slot of the user's store (service "api",
// proto/api.proto), so it works while replicad holds the slot open (which
// mailctl cannot):
//
//   mail list USER [PREFIX]             the user's mailboxes (PREFIX: named
//                                       as MAILBOX, a plain string prefix)
//   mail messages USER MAILBOX          UID, GUID, size, date, MODSEQ, flags
//   mail fetch USER MAILBOX UID         the message's exact bytes on stdout
//   mail digest USER MAILBOX            the mailbox digest `replctl check`
//                                       compares, and the LSN it was read at
//
// USER is resolved through the coordinator (LookupUser, as `replctl
// lookup`); the master of the user's store answers, or with --slot any
// other slot of that store (reads are served by replicas too; a replica's
// answer may lag by its replication lag). MAILBOX is named as the user sees
// it: "INBOX", "Sent", "INBOX/Sent" (= "Sent"); a full name of the user's
// own ("user/bob/Sent", as `replctl check` prints them) is taken as it is.
// Names are validated by the slot, which refuses "../" and the like.
//
// The digest is the slot's own: the client API's Mailbox carries it
// (Mailbox.digest, MailboxInfo::MailboxDigest(): attributes and every
// message row, expunged ones included), so it is the one `replctl check`
// compares, also after expunges. It is shown with an LSN it held at: the
// mailbox is read, then the slot's last LSN (GetSlot), then the mailbox
// again; equal reads mean the digest held at every LSN between, so at the
// LSN shown (a write to the mailbox changes its digest; a rename away and
// back between the reads is not seen). A mailbox changing between the
// reads is read again, a few times. A slot whose replicad predates the
// field answers an empty digest: said, exit 1.
//
// Exit codes as the rest of replctl: 0 done; 1 ran and failed (unknown
// user, no such mailbox or UID, the slot refused or could not be reached,
// the slot's replicad gives no digest, the mailbox kept changing); 2 could
// not run (usage, coordinator unreachable, authentication refused).
//
// Thread-compatible: one command at a time.
#ifndef MAILREPL_TOOLS_REPLCTL_MAIL_H_
#define MAILREPL_TOOLS_REPLCTL_MAIL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/coord.pb.h"

namespace mailrepl::tools {

struct MailOptions {
  std::vector<std::string> args;  // "mail" VERB USER ...: the command line after the flags
  bool json = false;
  uint64_t slot = 0;              // read this slot of the user's store; 0: its master
  std::string secret;             // the cluster secret: authenticates to the slots' API
};

// Runs `replctl mail ...`; returns the exit code. call() reaches the
// coordinator. Results go to stdout, errors (naming the user, mailbox and
// slot, and what to do) to stderr.
int RunMail(const MailOptions& options,
            const std::function<absl::StatusOr<coordpb::Response>(const coordpb::Request&)>& call);

// The user's name in mailbox names ("user/NAME"), from what an operator
// types: as the coordinator looks users up, the lower-case local part
// before '@' and '+' ("Bob+lists@example.com" -> "bob").
std::string MailUser(absl::string_view user);

// The full mailbox name: "INBOX" (any case) -> "user/bob", "Sent" and
// "INBOX/Sent" -> "user/bob/Sent"; "user/bob" and "user/bob/..." as they
// are. Not validated (the slot does that).
std::string MailboxFullName(absl::string_view user, absl::string_view mailbox);

// The reverse, for display: "user/bob" -> "INBOX", "user/bob/Sent" ->
// "INBOX/Sent" (unambiguous even for a folder named "INBOX").
// REQUIRES: full is "user/USER" or below it.
std::string MailboxShortName(absl::string_view user, absl::string_view full);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_REPLCTL_MAIL_H_
