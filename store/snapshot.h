// Snapshot files: the consistent state of a slot at one LSN (mailboxes,
// message rows, quotas, epoch history and, optionally, bodies), in the
// change log's record framing. Used to bootstrap an empty replica and, as
// log/BASE.snapshot without bodies, to summarize log segments removed by
// retention. Format: docs/formats.md "Snapshot files".
// Thread-compatible: callers hold the slot's index lock.
#ifndef MAILREPL_STORE_SNAPSHOT_H_
#define MAILREPL_STORE_SNAPSHOT_H_

#include <string>

#include "absl/status/status.h"
#include "store/identity.h"
#include "store/index.h"
#include "store/spool.h"

namespace mailrepl {

// Writes the index's state at its applied LSN to path (atomically). With a
// spool, every body is included once; with nullptr, none is.
absl::Status WriteSnapshot(Index& index, Spool* spool, const SlotIdentity& identity,
                           const std::string& path);

// Loads a snapshot into an empty index (and its bodies into the spool, made
// durable), verifying every entry's checksum, the trailer's counts and the
// resulting slot digest. kDataLoss if the file is damaged or incomplete;
// kFailedPrecondition if expect is given and the snapshot is of another
// cluster or store.
absl::Status ImportSnapshot(const std::string& path, Index& index, Spool& spool,
                            const SlotIdentity* expect = nullptr);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_SNAPSHOT_H_
