// File: replicad/slot_listeners.h
//
// The three listeners of a slot that belongs to a store, open whatever its
// role: LMTP (SlotBackend behind an LmtpServer) and the client API
// (ApiService behind an RpcServer), whose writes pass only the write gate,
// and the sync server, whose sessions are admitted only while the slot is a
// replica. LMTP's and the API's blocking slot work runs on the host's pool
// through the slot's WorkGate; the sync server's on its own two threads
// (see slot_listeners.cc).
//
// Thread-compatible: on the io thread.
#ifndef MAILREPL_REPLICAD_SLOT_LISTENERS_H_
#define MAILREPL_REPLICAD_SLOT_LISTENERS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/api.pb.h"
#include "proto/check.pb.h"
#include "proto/config.pb.h"
#include "replicad/lmtp_reply.h"
#include "replicad/work_pool.h"
#include "rpc/rpc_server.h"
#include "store/slot.h"

namespace mailrepl::lmtp {
class LmtpServer;
class SlotBackend;
}  // namespace mailrepl::lmtp
namespace mailrepl::api {
class ApiService;
}  // namespace mailrepl::api
namespace mailrepl::sync {
class SyncServer;
}  // namespace mailrepl::sync

namespace mailrepl::replicad {

// What the listeners ask of the rest of the slot.
struct SlotListenerHooks {
  // The LMTP write gate (any thread; nullopt lets the write through).
  std::function<std::optional<lmtp::LmtpReply>()> lmtp_gate;
  // Where a user lives (any thread; nullopt: in this slot's store).
  std::function<std::optional<lmtp::LmtpReply>(const std::string& user)> directory;
  // After each LMTP append (a worker): a reply replaces the 250.
  std::function<std::optional<lmtp::LmtpReply>(uint64_t lsn)> lmtp_after_append;
  // The API's write gate (any thread).
  std::function<absl::Status(uint64_t epoch)> check_write;
  // GetSlot (io thread).
  std::function<apipb::SlotState()> slot_state;
  // After each API write (a worker): a non-OK status answers the write.
  std::function<absl::Status(uint64_t lsn)> api_await_durable;
  // replctl check (io thread).
  std::function<asio::awaitable<absl::StatusOr<checkpb::StoreCheck>>(apipb::CheckStore)>
      check_store;
  // The sync server's admission, divergence and vouch (see SyncServerOptions).
  std::function<absl::Status()> admit;
  std::function<absl::Status(uint64_t fork_lsn, uint64_t master_epoch)> on_diverged;
  std::function<absl::Duration(uint64_t master_epoch)> vouch;
  // After a delivery ends, when no delivery is in flight any more (a worker).
  std::function<void()> on_lmtp_idle;
};

class SlotListeners {
 public:
  // io, slot and work must outlive this object.
  SlotListeners(asio::io_context& io, const configpb::SlotConfig& config, std::string secret,
                Slot& slot, WorkGate& work, SlotListenerHooks hooks);
  // Servers first (their sessions use the backend and the service).
  ~SlotListeners();
  SlotListeners(const SlotListeners&) = delete;
  SlotListeners& operator=(const SlotListeners&) = delete;

  // Binds all three; the servers run (Run()) only once all three are bound.
  absl::Status Listen();
  // Runs the servers; `done` is called on the io thread as each one ends.
  void Run(std::function<void()> done);
  // Stops accepting everywhere; Run()s end once their sessions have.
  void Stop();

  lmtp::SlotBackend& backend() { return *backend_; }
  api::ApiService& api() { return *api_; }
  rpc::RpcHandler api_handler();
  const lmtp::LmtpServer* lmtp_server() const { return lmtp_.get(); }
  const api::ApiService* api_service() const { return api_.get(); }
  const sync::SyncServer* sync_server() const { return sync_server_.get(); }
  sync::SyncServer& sync() { return *sync_server_; }
  static constexpr int kServers = 3;

 private:
  asio::io_context& io_;
  const configpb::SlotConfig config_;
  const std::string secret_;
  std::unique_ptr<lmtp::SlotBackend> backend_;
  std::unique_ptr<lmtp::LmtpServer> lmtp_;
  std::unique_ptr<api::ApiService> api_;
  std::unique_ptr<rpc::RpcServer> api_server_;
  std::unique_ptr<sync::SyncServer> sync_server_;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_SLOT_LISTENERS_H_
