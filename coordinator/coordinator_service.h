// File: coordinator/coordinator_service.h
//
// The coordinator RPC glue: an rpc::RpcHandler that parses a
// coordpb::Request, calls the Coordinator and returns the serialized
// coordpb::Response (errors travel as the Reply's status). It also holds
// the heartbeat long poll: when a host already knows the current topology
// and directory versions, its heartbeat waits (an asio::steady_timer) up to
// wait_ms, capped at kMaxWait and at half the lease period so that a master
// polling in a loop renews its lease at least twice per period, or until
// any change wakes every waiting heartbeat.
//
// The Coordinator's SQLite work (a few ms, one fsync per write) runs on the
// io thread: coordinatord has one io thread and the coordinator is not on
// the mail path, so a slow disk only delays other coordinator calls.
//
// Failover calls run the coroutine of coordinator/failover.h, Promote
// calls that of coordinator/promote.h; every recorded heartbeat wakes them
// (coordinator/report_waiter.h).
//
// Thread-compatible: construct, call and Shutdown() on the io thread.
//
// Example:
//   CoordinatorService service(io, *coordinator);
//   rpc::RpcServer server(io, {...,  .service = "coordinator"}, service.Handler());
#ifndef MAILREPL_COORDINATOR_COORDINATOR_SERVICE_H_
#define MAILREPL_COORDINATOR_COORDINATOR_SERVICE_H_

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "coordinator/coordinator.h"
#include "coordinator/failover.h"
#include "coordinator/promote.h"
#include "coordinator/report_waiter.h"
#include "rpc/rpc_server.h"

namespace mailrepl::coord {

inline constexpr char kCoordinatorService[] = "coordinator";
inline constexpr absl::Duration kMaxWait = absl::Seconds(10);

struct CoordinatorServiceStats {
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t heartbeats_waited = 0;  // heartbeats that entered the long poll
  uint64_t heartbeats_woken = 0;   // ... and were woken by a change
};

class CoordinatorService {
 public:
  // Registers itself as coordinator's change and report listener.
  CoordinatorService(asio::io_context& io, Coordinator& coordinator);
  ~CoordinatorService();
  CoordinatorService(const CoordinatorService&) = delete;
  CoordinatorService& operator=(const CoordinatorService&) = delete;

  // For rpc::RpcServer. The handler refers to this object.
  rpc::RpcHandler Handler();

  // Answers one serialized coordpb::Request.
  asio::awaitable<absl::StatusOr<std::string>> Handle(std::string request, rpc::RpcPeer peer);

  // Wakes every waiting heartbeat (they answer at once) and makes later
  // heartbeats answer without waiting; failovers and promotions not yet
  // switched abort.
  // Call before stopping the server.
  void Shutdown();

  size_t waiting() const { return waiters_.size(); }
  // Failovers and promotions waiting for reports or their lease wait.
  size_t failovers_waiting() const { return report_waiter_.waiting(); }
  const CoordinatorServiceStats& stats() const { return stats_; }

 private:
  asio::awaitable<absl::StatusOr<coordpb::HeartbeatReply>> Heartbeat(
      const coordpb::Heartbeat& request);
  // Every call but Heartbeat (synchronous).
  absl::StatusOr<std::string> Dispatch(const coordpb::Request& request);
  void WakeAll();

  asio::io_context& io_;
  Coordinator& coordinator_;
  std::set<asio::steady_timer*> waiters_;
  ReportWaiter report_waiter_;  // before the runners that use it
  FailoverRunner failovers_;
  PromoteRunner promotions_;
  bool shutting_down_ = false;
  CoordinatorServiceStats stats_;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_COORDINATOR_SERVICE_H_
