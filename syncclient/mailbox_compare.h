// What a consistency check compares, on both sides of the sync protocol:
// a mailbox's whole state (attributes and message rows, the form a resync
// repair carries), its digest recomputed from those rows, and the exact
// differences between a master's and a replica's state of one mailbox.
// Thread-compatible: pure functions over an Index the caller holds.
#ifndef MAILREPL_SYNCCLIENT_MAILBOX_COMPARE_H_
#define MAILREPL_SYNCCLIENT_MAILBOX_COMPARE_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/check.pb.h"
#include "proto/log.pb.h"
#include "store/digest.h"
#include "store/index.h"

namespace mailrepl::sync {

// The state of mailbox `id` in `ix` (expunged rows included); deleted =
// true and no messages when `ix` has no such mailbox.
absl::StatusOr<logpb::RepairMailbox> MailboxState(Index& ix, const std::string& id);

// The mailbox's digest recomputed from its message rows, not the running
// sum kept with the mailbox row: rows lost or changed behind the engine's
// back show here.
absl::StatusOr<Digest> RowDigest(Index& ix, const MailboxInfo& mb);

// How `replica` differs from `master` (both from MailboxState); kind ""
// when they are equal.
checkpb::MailboxDifference CompareMailboxes(const logpb::RepairMailbox& master,
                                            const logpb::RepairMailbox& replica);

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_MAILBOX_COMPARE_H_
