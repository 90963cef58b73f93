// File: store/salvage_file.h
//
// Salvage files: what an old master sets aside before it is rewound to
// follow the new master (docs/operations.md "Rejoin and salvage"). When a
// master of a newer epoch finds that this slot holds records past their
// fork point, the messages those records appended (as they stand now: their
// current flags, their mailbox's current name, bodies included) are written
// to SLOT/salvage/FROM-TO.salvage, durably, before the slot discards its
// state. The salvager (replicad/salvager.h) later appends them to the
// master again and records its progress in FROM-TO.progress beside it.
// The format (entries framed like change-log records, CRC32C each) is in
// docs/formats.md "Salvage files".
//
// Thread-safe: free functions; CollectSalvage reads a live slot through its
// public, thread-safe interface.
//
// Example:
//   ASSIGN_OR_RETURN(SalvageSet set, CollectSalvage(slot, fork, master_epoch));
//   RETURN_IF_ERROR(WriteSalvageFile(SalvageFilePath(dir, set), set));
//   RETURN_IF_ERROR(slot.DiscardState());
#ifndef MAILREPL_STORE_SALVAGE_FILE_H_
#define MAILREPL_STORE_SALVAGE_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/salvage.pb.h"

namespace mailrepl {

class Slot;

struct SalvageSet {
  salvagepb::SalvageHeader header;
  std::vector<salvagepb::SalvageMessage> messages;  // in LSN order
};

// The salvage directory of a slot whose root is `slot_root`.
std::string SalvageDir(const std::string& slot_root);
// DIR/FROM-TO.salvage (20-digit LSNs, so names sort in LSN order).
std::string SalvageFilePath(const std::string& dir, const salvagepb::SalvageHeader& header);
// The progress file beside a salvage file.
std::string SalvageProgressPath(const std::string& salvage_path);
// The salvage files in dir not yet done, sorted; none if dir is missing.
absl::StatusOr<std::vector<std::string>> PendingSalvageFiles(const std::string& dir);

// The messages appended on `slot` after fork_lsn that still exist there
// (not expunged, mailbox not deleted), with their bodies and current flags.
// master_epoch: the epoch of the master that found the fork. Reads the
// slot's log from fork_lsn + 1 (kFailedPrecondition if log retention
// dropped it) and its index. Changes nothing.
absl::StatusOr<SalvageSet> CollectSalvage(Slot& slot, uint64_t fork_lsn, uint64_t master_epoch);

// Writes the set to path atomically and durably (temporary file, fsync,
// rename, fsync of the directory, which is created if missing).
absl::Status WriteSalvageFile(const std::string& path, const SalvageSet& set);
// Reads and checks a salvage file: kDataLoss naming the file and offset if
// an entry is damaged, out of order, or the trailer is missing or wrong.
absl::StatusOr<SalvageSet> ReadSalvageFile(const std::string& path);
// The same checks over a salvage file's bytes already in memory (what
// ReadSalvageFile does once it has read the file; the fuzzer's way in);
// errors name `path`.
absl::StatusOr<SalvageSet> ParseSalvageFile(absl::string_view data, const std::string& path);

// The progress of a salvage (an empty progress if the file does not exist).
absl::StatusOr<salvagepb::SalvageProgress> ReadSalvageProgress(const std::string& salvage_path);
absl::Status WriteSalvageProgress(const std::string& salvage_path,
                                  const salvagepb::SalvageProgress& progress);
// The salvage is finished: FROM-TO.salvage becomes FROM-TO.done (kept for
// the operator, who may delete it) and the progress file goes.
absl::Status MarkSalvageDone(const std::string& salvage_path);

}  // namespace mailrepl

#endif  // MAILREPL_STORE_SALVAGE_FILE_H_
