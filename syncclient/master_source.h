// The master's side of replication reads a slot that another process (or
// another part of this one) writes: records from its log files, a
// consistent read-only view of its index, bodies from its spool. It never
// writes to the slot. New records are noticed with inotify on the log and
// index directories, unless the writer is in this process and tells of
// every commit itself (replicad: Slot's on_commit pokes the sync client);
// only records up to the index's applied LSN (which the writer advances
// after fsync) are durable and may be shipped.
// Thread-compatible: use from one io_context thread.
#ifndef MAILREPL_SYNCCLIENT_MASTER_SOURCE_H_
#define MAILREPL_SYNCCLIENT_MASTER_SOURCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "common/sqlite.h"
#include "store/identity.h"
#include "store/index.h"
#include "store/log_reader.h"
#include "store/slot.h"
#include "store/spool.h"

namespace mailrepl::sync {

class MasterSource {
 public:
  // watch_files false: no inotify watch; WaitForChange() then only waits
  // out its timeout, and the caller learns of commits some other way.
  static absl::StatusOr<std::unique_ptr<MasterSource>> Open(
      const SlotPaths& paths, asio::any_io_executor executor, bool watch_files = true);
  ~MasterSource();
  MasterSource(const MasterSource&) = delete;
  MasterSource& operator=(const MasterSource&) = delete;

  const SlotIdentity& identity() const { return identity_; }
  const SlotPaths& paths() const { return paths_; }

  // A consistent read-only view of the index (state at its applied LSN);
  // kPosition: its position and slot digest only (Index::OpenReadOnly).
  absl::StatusOr<std::unique_ptr<Index>> View(
      Index::ViewScope scope = Index::ViewScope::kAll);
  // The highest LSN known durable: the index's applied LSN.
  absl::StatusOr<uint64_t> DurableLsn();
  // The next replicated record with LSN >= from (skipping local records),
  // if it is durable (LSN <= durable). nullopt: none yet.
  absl::StatusOr<std::optional<LogRecord>> ReadRecord(uint64_t from,
                                                      uint64_t durable);
  // A body from the spool, found through the index's blobs table and
  // checked against its SHA-1; kNotFound if it is not there (yet).
  absl::StatusOr<std::string> ReadBody(const std::string& guid);
  // Bodies (in the order of guids) that ReadBody did not find. The master
  // appends bodies to spool packs in the background after their records are durable,
  // in bursts of several MiB (store/body_writer.h), so on a quiet master a
  // recent body may stay for a long time only in the log record that
  // carries it, above the spool checkpoint. Reads the log from there once;
  // a body written to the spool meanwhile is read from the spool.
  absl::StatusOr<std::vector<std::string>> ReadBodiesFromLog(
      const std::vector<std::string>& guids);

  // Returns when the log or the index changed (if watched), or after timeout.
  asio::awaitable<void> WaitForChange(absl::Duration timeout);

 private:
  MasterSource(const SlotPaths& paths, asio::any_io_executor executor);

  SlotPaths paths_;
  SlotIdentity identity_;
  Spool spool_;
  std::unique_ptr<sqlite::Database> meta_db_;  // read-only, for the applied LSN
  std::optional<sqlite::Statement> durable_lsn_;  // prepared once, reset after each read
  std::optional<LogReader> reader_;
  uint64_t reader_next_ = 0;  // LSN the reader will return next
  std::optional<LogRecord> peeked_;
  bool watching_ = false;
  asio::posix::stream_descriptor inotify_;
};

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_MASTER_SOURCE_H_
