// The sync client: runs beside a master slot and pushes its change log to
// one replica's sync server. Catches up and exits, follows the log
// (rolling), bootstraps an empty or far-behind replica from a snapshot,
// resyncs mailboxes by state, or replays a leftover log file.
// Thread-compatible: Run() and Stop() on the io_context's thread. Nothing it
// does there blocks: the slot's files and index are read on a worker
// (SyncClientOptions::blocking), awaited.
//
// Example:
//   SyncClient client(io, options);
//   asio::co_spawn(io, client.Run(), [&](std::exception_ptr, absl::Status s) {
//   ... }); io.run();
#ifndef MAILREPL_SYNCCLIENT_SYNC_CLIENT_H_
#define MAILREPL_SYNCCLIENT_SYNC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/check.pb.h"
#include "proto/sync.pb.h"
#include "store/index.h"
#include "store/slot.h"

namespace mailrepl::transport {
template <typename Frame>
class BasicFramedConnection;
}  // namespace mailrepl::transport

namespace mailrepl::sync {

using FramedConnection = transport::BasicFramedConnection<syncpb::Frame>;
class MasterSource;

struct SyncClientOptions {
  SlotPaths slot;
  std::string server;  // ADDR:PORT of the sync server
  std::string secret;  // the shared secret's bytes
  enum class Mode {
    kCatchUp,        // stream up to the durable LSN at start, then exit
    kRolling,        // follow the log until stopped
    kResyncUser,     // state-based resync of user `target`'s mailboxes
    kResyncMailbox,  // ... of mailbox `target`
    kResyncAll,      // ... of every mailbox
    kReplayFile,     // send the records of log file `target`
    kCheck,          // compare with the replica at a common LSN (check())
  };
  Mode mode = Mode::kCatchUp;
  std::string target;
  bool compress = false;
  bool verbose = false;
  // The slot's writer runs in this process and calls Poke(lsn) as soon as
  // each commit is durable (replicad): the slot's files are not watched
  // with inotify, and the durable LSN comes from the pokes rather than
  // from the index (which the slot updates after the fsync).
  bool poked_on_commit = false;
  size_t batch_records = 512;
  size_t batch_bytes = 1 << 20;
  size_t window_bytes = 16 << 20;  // unacknowledged bytes in flight
  // Reconnect backoff: exponential, capped low. A connection attempt to a
  // host that is down costs almost nothing, and the cap bounds how long a
  // replica that came back waits for its stream (bench/sync_bench part d).
  absl::Duration backoff_min = absl::Milliseconds(50);
  absl::Duration backoff_max = absl::Milliseconds(250);
  // Where the slot's files and index are read (replicad: the host's worker
  // pool). Unset: a thread of the client's own.
  std::optional<asio::any_io_executor> blocking;
  // Called on the io thread whenever the replica is heard from (welcome,
  // acknowledgement, heartbeat): stats() then holds the news.
  std::function<void()> on_progress;
  // kCheck (replctl check; docs/operations.md "Consistency checks").
  struct Check {
    bool deep = false;    // also hash every body and check index against log
    bool repair = false;  // resync differing mailboxes, then compare again
    double max_bytes_per_second = 0;  // --deep body reads on the replica
  } check;
};

struct SyncStats {
  uint64_t records = 0;       // records sent
  uint64_t record_bytes = 0;  // their payload bytes
  uint64_t bodies_sent =
      0;  // message bodies sent (in records, snapshots, repairs)
  uint64_t bodies_skipped =
      0;  // appends whose body the replica already had (by GUID)
  uint64_t snapshots = 0;
  uint64_t connects = 0;
  uint64_t master_lsn = 0;  // durable LSN on the master, last seen
  uint64_t acked_lsn = 0;   // durable and applied on the replica
  double lag_seconds = 0;   // age of the oldest record not yet acknowledged
  bool connected = false;   // a session with the replica is up
  absl::Time last_heard = absl::InfinitePast();  // last frame from the replica
  // Until when (BootNanos) the replica vouches for this master's lease:
  // the probe of the last heartbeat it answered plus its vouch_ms.
  int64_t vouched_until_ns = 0;
  uint64_t newer_epoch = 0;  // the replica said the master's epoch is stale: this one
  uint64_t wire_bytes = 0;  // bytes sent on the wire (after compression)
  std::vector<std::string>
      quarantined;                    // "name (reason)" as the replica reports
  std::vector<std::string> failed;    // mailboxes a resync could not repair
  std::vector<std::string> repaired;  // mailboxes a resync repaired
};

class SyncClient {
 public:
  SyncClient(asio::io_context& io, SyncClientOptions options);
  ~SyncClient();
  SyncClient(const SyncClient&) = delete;
  SyncClient& operator=(const SyncClient&) = delete;

  // Runs to completion. OK: done. kAborted: partial (a resync left
  // mailboxes unrepaired, listed in stats().failed). Other codes: could not
  // run (no connection in catch-up mode, authentication, divergence...).
  asio::awaitable<absl::Status> Run();
  // Finish the batch in flight, then end Run() with OK.
  void Stop();
  // Records up to durable_lsn are durable in the slot's log (replicad calls
  // this, on the io thread, for the slot's on_durable hook): ship them at
  // once.
  void Poke(uint64_t durable_lsn);
  const SyncStats& stats() const { return stats_; }
  // Bytes sent on the wire so far, the open connection's included
  // (stats().wire_bytes counts closed connections only).
  uint64_t wire_bytes_now() const;
  // kCheck: what the check found (valid once Run() returned OK).
  const checkpb::ReplicaCheck& check_result() const { return check_; }

 private:
  struct Session;
  // The master's position, read on a worker (a short read transaction).
  struct MasterPosition {
    uint64_t applied_lsn = 0;
    uint64_t applied_epoch = 0;
    uint64_t log_start_lsn = 0;
    std::vector<EpochStart> epoch_history;
  };
  asio::awaitable<absl::StatusOr<MasterPosition>> Position();
  asio::awaitable<absl::Status> RunOnce();
  void Heard();
  asio::awaitable<absl::Status> Handshake(Session& s);
  asio::awaitable<absl::Status> SendSnapshot(Session& s);
  asio::awaitable<absl::Status> Stream(Session& s, uint64_t target,
                                       bool follow);
  asio::awaitable<absl::Status> Resync(Session& s);
  asio::awaitable<absl::Status> Check(Session& s);
  // The view of the master (of `scope`) and the replica's digests at one
  // LSN (the server holds other sessions back from the first digest
  // request on).
  struct CommonPoint {
    std::unique_ptr<Index> view;
    syncpb::DigestReply replica;
  };
  asio::awaitable<absl::StatusOr<CommonPoint>> MeetAtCommonLsn(
      Session& s, const syncpb::DigestRequest& request,
      Index::ViewScope scope = Index::ViewScope::kAll);
  asio::awaitable<absl::StatusOr<syncpb::RepairDone>> SendRepair(
      Session& s, const logpb::RepairMailbox& repair,
      const std::vector<std::string>& replace_guids);
  asio::awaitable<absl::Status> ReplayFile(Session& s);
  // Reads acks until one covers lsn (a replica repeats an ack, for an
  // earlier LSN, when applying that batch changed its quarantine list).
  asio::awaitable<absl::Status> AwaitAck(Session& s, uint64_t lsn, absl::Duration timeout);
  // Sends Done and waits until the replica answers Done: everything sent
  // before is applied there (a script comparing right after sees it).
  asio::awaitable<absl::Status> Finish(Session& s);
  asio::awaitable<absl::Status> SendBodies(
      Session& s, const std::vector<std::string>& guids);

  asio::io_context& io_;
  SyncClientOptions options_;
  std::unique_ptr<asio::thread_pool> own_pool_;  // when options_.blocking is unset
  asio::any_io_executor blocking_;
  std::unique_ptr<MasterSource> source_;
  SyncStats stats_;
  checkpb::ReplicaCheck check_;
  bool stopping_ = false;
  bool poked_ = false;
  uint64_t poked_lsn_ = 0;  // the highest durable LSN Poke() was given
  asio::steady_timer* wake_ = nullptr;  // the streaming session's, while it runs
  uint64_t catch_up_target_ = 0;
  std::shared_ptr<FramedConnection> current_;
  asio::steady_timer stop_timer_;
};

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_SYNC_CLIENT_H_
