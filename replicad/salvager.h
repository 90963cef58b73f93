// File: replicad/salvager.h
//
// The salvager of one slot: brings the messages an old master set aside
// past the fork point (store/salvage_file.h) back to its store's current
// master, through the master's client API (append with the same bytes,
// flags and internal date; the master assigns new UIDs), then records the
// salvage in the coordinator (RecordSalvage: a "salvage" event in `replctl
// history`) and marks the file done. docs/operations.md "Rejoin and
// salvage".
//
// Exactly once (a crash or a lost reply at any point, or another salvager
// of overlapping records running at the same time, neither loses nor
// duplicates a message): every entry is appended conditionally, and the
// master checks the condition atomically with the append (client API
// Append.unless_present; Slot::Append with unless_present): it appends
// nothing if the mailbox already holds k messages with the entry's GUID and
// a UID above the entry's fork_uid (the mailbox's last UID at the fork
// point: whatever is above it arrived after the fork), where the entry is
// the k-th of the file with that mailbox and GUID. Such an entry counts as
// already there. This covers the entry appended just before a crash (the
// progress file says how many entries are done, written after each one),
// the same messages set aside by two old slots of the store (the old master
// and a replica that had received some of its records) and salvaged by both
// at once, and a message that an MTA delivered again to the new master
// because the old master died before its 250 reached it: the same bytes in
// the same mailbox after the fork point are the same message.
//
// Thread-compatible: everything on the io thread (coroutines); the salvage
// files are read and written on the `blocking` executor when one is given
// (replicad: the host pool), so the io thread never waits for the disk.
#ifndef MAILREPL_REPLICAD_SALVAGER_H_
#define MAILREPL_REPLICAD_SALVAGER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/coord.pb.h"
#include "proto/salvage.pb.h"
#include "store/salvage_file.h"

namespace mailrepl::replicad {

// Where salvaged messages go: the store's master (the client API in
// replicad, a slot in tests).
class SalvageTarget {
 public:
  virtual ~SalvageTarget() = default;
  // Appends the message (bytes, flags, internal date), creating its
  // mailbox if missing, unless the mailbox already holds `count` messages
  // with its GUID and a UID above its fork_uid: checked atomically with the
  // append. Returns whether it appended (false: already there). An error
  // may still have appended it (a lost reply).
  virtual asio::awaitable<absl::StatusOr<bool>> AppendUnlessPresent(
      const salvagepb::SalvageMessage& message, uint32_t count) = 0;
};

// Appends the entries of `set` (the salvage file at `path`) that are not on
// the target yet, resuming from and updating the progress file. Returns the
// final progress (next == number of messages) or the first error (the
// progress made so far is kept). The progress file is read and written on
// `blocking` when given, else on the caller's thread.
asio::awaitable<absl::StatusOr<salvagepb::SalvageProgress>> SalvageInto(
    const std::string& path, const SalvageSet& set, SalvageTarget& target,
    std::optional<asio::any_io_executor> blocking = std::nullopt);

// The store's master as the salvager needs it.
struct SalvageMaster {
  uint64_t store_id = 0;
  uint64_t slot_id = 0;
  std::string api_address;
  uint64_t epoch = 0;  // writes carry it
};

struct SalvagerOptions {
  std::string dir;  // SalvageDir(slot root)
  uint64_t slot_id = 0;
  std::string secret;
  // The master to salvage into, or nullopt while this slot is not a
  // replica following one (then the salvager waits).
  std::function<std::optional<SalvageMaster>()> master;
  // RecordSalvage at the coordinator (unset: not recorded).
  std::function<asio::awaitable<absl::Status>(coordpb::RecordSalvage)> record;
  absl::Duration retry = absl::Seconds(1);
  // Where the salvage files are read and written (replicad: the host
  // pool). Unset: on the io thread.
  std::optional<asio::any_io_executor> blocking;
};

struct SalvagerStats {
  uint64_t salvages_done = 0;
  uint64_t appended = 0;
  uint64_t already_there = 0;
  std::string last_error;
};

class Salvager {
 public:
  Salvager(asio::io_context& io, SalvagerOptions options);
  Salvager(const Salvager&) = delete;
  Salvager& operator=(const Salvager&) = delete;

  // Works through the pending salvage files, retrying failures every
  // `retry`, and waits for Wake() when there are none; returns after Stop().
  asio::awaitable<void> Run();
  // A salvage file was written, or the master may have changed.
  void Wake();
  void Stop();
  const SalvagerStats& stats() const { return stats_; }

 private:
  asio::awaitable<absl::Status> SalvageFile(const std::string& path, const SalvageMaster& master);
  asio::awaitable<void> Pause(absl::Duration d);

  asio::io_context& io_;
  SalvagerOptions options_;
  SalvagerStats stats_;
  asio::steady_timer wake_;
  bool woken_ = false;
  bool stopping_ = false;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_SALVAGER_H_
