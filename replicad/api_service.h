// File: replicad/api_service.h
//
// The client API of one slot (service "api", proto/api.proto,
// docs/protocol.md "Client API"): an rpc::RpcHandler that turns an
// apipb::Request into an apipb::Response by calling the Slot.
//
// Writes (create, rename and delete mailbox, append, set flags, expunge,
// set quota) must carry an epoch. Epoch 0 is refused at once
// (kFailedPrecondition); otherwise check_write(epoch) is asked right before
// the slot call and the write is refused with its status unless it is OK,
// so nothing changes. Reads (list mailboxes, list messages, fetch body, get
// quota, get slot) are answered by any slot. Invalid arguments (mailbox
// names such as "user/../x", flags, user names, an unknown SetFlags op)
// are refused with kInvalidArgument before anything else; a request with
// no op set, or unparsable bytes, likewise. Slot errors come back with the
// slot's code and message unchanged. Response.lsn is slot.last_lsn() after
// a successful write. GUIDs are 40 lower-case hex digits.
//
// Every slot call blocks (a write waits for its fsync), so it runs on a
// worker (options.work: replicad's host pool through the slot's WorkGate;
// else a pool of `threads` of the service's own); the coroutine resumes on
// the caller's executor (the RpcServer's io thread), which never blocks.
//
// One writer: a write is "in flight" from just before its check_write to
// the end of its slot call. After replicad fences the slot
// (check_write refuses from then on), `co_await DrainWrites()` returns once
// every write that passed check_write is durable, so slot.last_lsn() then
// covers every write this service will ever acknowledge at that epoch.
//
// Thread-safe: Handle() may run concurrently (one RpcServer session each).
// check_write is called on pool threads, slot_state on the caller's thread
// (the io thread); both must be thread-safe accordingly.
//
// Example:
//   ApiService api(*slot, {.threads = 8,
//                          .check_write = [&](uint64_t e) { return role.CheckWrite(e); },
//                          .slot_state = [&] { return role.State(); }});
//   rpc::RpcServer server(io, {.listen = addr, .service = "api", .secret = secret},
//                         api.Handler());
#ifndef MAILREPL_REPLICAD_API_SERVICE_H_
#define MAILREPL_REPLICAD_API_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/base/thread_annotations.h"
#include "asio.hpp"
#include "common/mutex.h"
#include "proto/api.pb.h"
#include "rpc/rpc_server.h"
#include "store/slot.h"

namespace mailrepl::replicad {
class HostPool;
class WorkGate;
}  // namespace mailrepl::replicad

namespace mailrepl::api {

struct ApiServiceOptions {
  // Without `work`: slot calls in flight at once, on a pool of this many
  // threads of the service's own; each blocks a thread (a write for about
  // one fsync; appends from many clients share fsyncs).
  int threads = 8;
  // Where the slot calls run (replicad: the host pool, bounded per slot).
  // Must outlive the service. Unset: a pool of `threads` of its own.
  replicad::WorkGate* work = nullptr;
  // OK iff this slot is the unfenced master at exactly `epoch`; otherwise
  // the refusal (kFailedPrecondition or kUnavailable) whose message names
  // the current epoch and master. Unset: every write is refused.
  std::function<absl::Status(uint64_t epoch)> check_write;
  // For GetSlot: master, epoch, master_api_address. store_id, slot_id and
  // last_lsn are always filled in from the slot itself. Unset: "not
  // master, epoch 0".
  std::function<apipb::SlotState()> slot_state;
  // If set, called on the pool after each successful write with the slot's
  // last LSN; a non-OK status answers the write instead (sync durability:
  // no replica confirmed it in time; the write stays on the master).
  std::function<absl::Status(uint64_t lsn)> await_durable;
  // For CheckStore: compares the slot with its replicas (replicad's
  // SlotHost::CheckStore), on the caller's executor. With deep set, the
  // service verifies its own slot too (VerifySlot, on the pool). Unset:
  // CheckStore is refused.
  std::function<asio::awaitable<absl::StatusOr<checkpb::StoreCheck>>(apipb::CheckStore)>
      check_store;
};

struct ApiServiceStats {
  uint64_t reads = 0;
  uint64_t writes = 0;          // acknowledged writes
  uint64_t refused_writes = 0;  // epoch 0 or check_write said no
  uint64_t errors = 0;          // any other error answer
};

class ApiService {
 public:
  // slot must outlive the service.
  ApiService(Slot& slot, ApiServiceOptions options);
  // With a pool of its own: waits for slot calls still running on it.
  ~ApiService();
  ApiService(const ApiService&) = delete;
  ApiService& operator=(const ApiService&) = delete;

  // For rpc::RpcServer. The service must outlive the server's sessions.
  rpc::RpcHandler Handler();

  // Parses request bytes, answers with response bytes or the error.
  asio::awaitable<absl::StatusOr<std::string>> Handle(std::string request);
  // The same on parsed messages.
  asio::awaitable<absl::StatusOr<apipb::Response>> Call(apipb::Request request);

  // Returns once no write that passed check_write is still running (see
  // "One writer" above). Does not block the calling thread.
  asio::awaitable<void> DrainWrites();

  ApiServiceStats stats() const;

  // True for the operations that change the slot.
  static bool IsWrite(const apipb::Request& request);

 private:
  asio::awaitable<absl::StatusOr<apipb::Response>> CheckStore(apipb::Request request);
  // Blocking: runs on the pool.
  absl::StatusOr<apipb::Response> Execute(const apipb::Request& request);
  absl::StatusOr<apipb::Response> ExecuteWrite(const apipb::Request& request);
  absl::StatusOr<apipb::Response> ExecuteRead(const apipb::Request& request);

  Slot& slot_;
  ApiServiceOptions options_;
  std::unique_ptr<replicad::HostPool> own_pool_;  // without options.work
  std::unique_ptr<replicad::WorkGate> own_work_;
  replicad::WorkGate* work_;
  // Writes in flight, by ticket (taken in order); DrainWrites() waits for
  // the tickets taken before it was called.
  Mutex gate_mu_;
  CondVar gate_cv_;
  uint64_t next_ticket_ ABSL_GUARDED_BY(gate_mu_) = 0;
  std::set<uint64_t> in_flight_ ABSL_GUARDED_BY(gate_mu_);
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> writes_{0};
  std::atomic<uint64_t> refused_writes_{0};
  std::atomic<uint64_t> errors_{0};
};

// Checks a request's arguments without touching the slot (exposed for
// tests): kInvalidArgument naming the field, or OK.
absl::Status ValidateRequest(const apipb::Request& request);

}  // namespace mailrepl::api

#endif  // MAILREPL_REPLICAD_API_SERVICE_H_
