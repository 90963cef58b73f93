// Refusals: why a replica ends a session, as one wire code per cause, and
// what the master's client does about each (docs/protocol.md, "Errors").
//
// The server's checks return Refuse(code, ...) statuses; RefusalFrame() is
// the one place that turns a failed status into the Error frame sent before
// the connection closes (a status without a refusal code is mapped by its
// absl code). On the client, FromErrorFrame() turns a received Error back
// into a status whose absl code says how to react:
//   kUnavailable / kResourceExhausted  retry (reconnect after a back-off; the
//                                      handshake resumes at the replica's LSN)
//   kFailedPrecondition                stop and report (needs a person or a
//                                      newer epoch: stale master, diverged
//                                      replica, failed slot, wrong store)
//   kPermissionDenied                  stop: the secrets differ
#ifndef MAILREPL_SYNCCLIENT_REFUSAL_H_
#define MAILREPL_SYNCCLIENT_REFUSAL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "proto/sync.pb.h"

namespace mailrepl::sync {

// A status that refuses with `code`; `epoch` and `lsn` fill the Error
// frame's fields of the same names (STALE_EPOCH: the newest epoch the
// replica knows; DIVERGED: the fork point; GAP: the replica's last LSN).
absl::Status Refuse(syncpb::ErrorCode code, absl::string_view message, uint64_t epoch = 0,
                    uint64_t lsn = 0);

// The Error a failed status stands for: its refusal code if it has one;
// else BAD_FRAME for kInvalidArgument, DISK_FULL for kResourceExhausted,
// none for a broken or timed-out connection (kUnavailable,
// kDeadlineExceeded, kCancelled: nobody would read it), APPLY_FAILED for
// anything else.
std::optional<syncpb::Error> RefusalFor(const absl::Status& s);

// The client's status for an Error frame from `peer` (see the table above).
absl::Status FromErrorFrame(const syncpb::Error& e, const std::string& peer);

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_REFUSAL_H_
