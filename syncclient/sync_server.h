// The sync server: runs beside a replica slot, accepts authenticated
// connections from the master's sync client, and applies what it sends:
// records (same LSNs and epochs, durable before acknowledged), snapshots,
// mailbox repairs. Never writes to the master (replication is one-way).
// One bad connection never affects another: every failure closes only that
// connection, with a logged reason and, where the master can act on it, a
// typed refusal (syncclient/refusal.h).
// Thread-compatible: runs on one io_context thread. Nothing it does there
// blocks: every call into the slot runs on a worker (Offload), so a replica
// applying a large batch or a snapshot never delays the host's other slots.
#ifndef MAILREPL_SYNCCLIENT_SYNC_SERVER_H_
#define MAILREPL_SYNCCLIENT_SYNC_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio.hpp"
#include "common/mutex.h"
#include "proto/sync.pb.h"
#include "store/slot.h"
#include "transport/server.h"

namespace mailrepl::transport {
template <typename Frame>
class BasicFramedConnection;
}  // namespace mailrepl::transport

namespace mailrepl::sync {

using FramedConnection = transport::BasicFramedConnection<syncpb::Frame>;

struct SyncServerOptions {
  std::string listen;  // ADDR:PORT
  std::string secret;
  bool verbose = false;
  // If set, asked (on the io thread: must not block) at every login: a non-OK answer refuses the session with
  // NOT_REPLICA and that message (replicad: the slot is not a replica now).
  std::function<absl::Status()> admit;
  // If set, called (on a pool thread, with no other session applying) when
  // a master of a newer epoch than this slot's records says the slot has
  // diverged after fork_lsn (Error DIVERGED): the slot holds records past
  // the fork point, from a time it was master itself. replicad sets the
  // records aside for salvage and rewinds the slot (Slot::DiscardState);
  // the master's next session then finds the slot empty and sends a
  // snapshot. Unset (the sync_server binary): the slot keeps refusing.
  std::function<absl::Status(uint64_t fork_lsn, uint64_t master_epoch)> on_diverged;
  // Where blocking slot work runs (replicad: the host's worker pool). Unset:
  // a pool of two threads of the server's own.
  std::optional<asio::any_io_executor> blocking;
  // If set, asked (on the io thread) at every heartbeat of a master of
  // `master_epoch` that carries a probe: for how long from now this host
  // vouches for that master's lease (replicad: while its own coordinator
  // contact lasts and it knows no newer epoch; zero or less: it does not).
  // Unset (the sync_server binary): never vouches.
  std::function<absl::Duration(uint64_t master_epoch)> vouch;
};

struct SyncServerStats {
  uint64_t connections = 0;
  uint64_t auth_failures = 0;
  uint64_t bad_frames = 0;
  uint64_t records_applied = 0;
  uint64_t snapshots = 0;
  uint64_t repairs = 0;
  uint64_t divergences = 0;          // on_diverged called and succeeded
  uint64_t divergences_refused = 0;  // DIVERGED not acted on (see SetAsideDiverged), or failed
};

class SyncServer {
 public:
  // slot must outlive the server.
  SyncServer(asio::io_context& io, Slot& slot, SyncServerOptions options);
  ~SyncServer();
  SyncServer(const SyncServer&) = delete;
  SyncServer& operator=(const SyncServer&) = delete;

  // Binds the listening socket.
  absl::Status Listen();
  // The bound port (after Listen), useful with port 0.
  uint16_t port() const;
  // Accepts connections until Stop(), then returns once every session ended.
  asio::awaitable<void> Run();
  // Stops accepting; open sessions finish the batch they are applying.
  void Stop();
  // Ends every open session with STALE_EPOCH naming `epoch` (replicad: the
  // slot became master at that epoch; an old master that still sends learns
  // it is stale and fences itself at once).
  void CloseSessions(const std::string& why, uint64_t epoch);
  SyncServerStats stats() const;

 private:
  // One session's state, from the handshake on.
  struct SessionState {
    FramedConnection& conn;
    // The master's epoch: from the hello, raised by the epochs of the
    // records this session delivers (a master that begins an epoch itself).
    uint64_t epoch = 0;
    // What this session last told the master about quarantined mailboxes.
    std::vector<Quarantine> reported;
    std::optional<syncpb::Frame> held;  // a frame read ahead while merging batches
  };
  // What the handshake reads from the slot (on a worker).
  struct Position;

  asio::awaitable<void> Session(std::shared_ptr<FramedConnection> conn);
  // Runs a session until it ends; a refusal in the returned status is sent
  // by Session(), the one place that writes Error frames.
  asio::awaitable<absl::Status> Serve(FramedConnection& conn);
  asio::awaitable<absl::StatusOr<SessionState>> Handshake(FramedConnection& conn);
  // One handler per kind of frame from the master.
  asio::awaitable<absl::Status> OnRecords(SessionState& s, syncpb::Frame f);
  void OnHeartbeat(SessionState& s, const syncpb::Heartbeat& hb);
  asio::awaitable<absl::Status> OnDigestRequest(SessionState& s, const syncpb::DigestRequest& req);
  asio::awaitable<absl::Status> OnContentsRequest(SessionState& s,
                                                  const syncpb::ContentsRequest& req);
  asio::awaitable<absl::Status> OnVerifyRequest(SessionState& s, const syncpb::VerifyRequest& req);
  asio::awaitable<absl::Status> OnRepair(SessionState& s, const syncpb::Repair& repair);
  asio::awaitable<absl::Status> OnDone(SessionState& s);
  asio::awaitable<absl::Status> OnError(SessionState& s, const syncpb::Error& e);
  asio::awaitable<absl::Status> ReceiveSnapshot(FramedConnection& conn, uint64_t lsn);
  asio::awaitable<absl::Status> ReceiveBodies(FramedConnection& conn,
                                              const std::vector<std::string>& guids,
                                              std::vector<std::string>* bodies);
  // DIVERGED from a master of master_epoch: checks it may rewind this slot,
  // then runs options_.on_diverged with no other session applying.
  asio::awaitable<absl::Status> SetAsideDiverged(const FramedConnection& conn, uint64_t fork_lsn,
                                                 uint64_t master_epoch);
  // Returns once no other session runs a resync (see resync_owner_).
  asio::awaitable<void> WaitForResync(const FramedConnection& conn);
  // Runs fn (blocking slot work) on the blocking executor and resumes here
  // with its result.
  template <typename Fn>
  auto OffThread(Fn fn);
  // STALE_EPOCH for a session of epoch `epoch` when this replica knows a
  // newer one (known_epoch_ or `seen`), else OK.
  absl::Status CheckNotStale(uint64_t epoch, uint64_t seen = 0) const;
  void NoteKnownEpoch(uint64_t epoch);

  Slot& slot_;
  SyncServerOptions options_;
  transport::Server<FramedConnection> server_;
  std::unique_ptr<asio::thread_pool> own_pool_;  // when options_.blocking is unset
  asio::any_io_executor blocking_;
  SyncServerStats stats_;
  // The session running a state-based resync, from its first digest
  // request until it ends: meanwhile other sessions' records wait, so that
  // the replica's state holds still while the client compares and repairs
  // it.
  const FramedConnection* resync_owner_ = nullptr;
  asio::steady_timer resync_done_;  // cancelled when resync_owner_ ends
  // Kept on the io thread without asking the slot: the newest epoch a
  // session or CloseSessions made known (a session of an older one is
  // stale; the apply path checks the slot's own seen epoch as well), and
  // the slot's last LSN after the latest handshake, apply or snapshot (for
  // heartbeat answers).
  uint64_t known_epoch_ = 0;
  uint64_t last_lsn_ = 0;
  // Held (on a worker) while a session trims and appends records.
  Mutex apply_mu_;
};

}  // namespace mailrepl::sync

#endif  // MAILREPL_SYNCCLIENT_SYNC_SERVER_H_
