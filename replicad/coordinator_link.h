// File: replicad/coordinator_link.h
//
// replicad's line to coordinatord: registers the host and its slots, then
// heartbeats in a long poll (docs/protocol.md "Coordinator RPC"). Every
// heartbeat carries the slots' status and renews the leases of the stores
// this host masters; its reply brings new assignments or a new user
// directory as soon as they change. When the coordinator cannot be
// reached the link retries (200 ms doubling to 2 s) and the host goes on
// with the roles it knows (the role cache).
//
// Thread-compatible: Run() and Stop() on the io thread; the callbacks run
// there too.
#ifndef MAILREPL_REPLICAD_COORDINATOR_LINK_H_
#define MAILREPL_REPLICAD_COORDINATOR_LINK_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "proto/coord.pb.h"

namespace mailrepl::rpc {
class RpcClient;
}  // namespace mailrepl::rpc

namespace mailrepl::replicad {

struct CoordinatorLinkOptions {
  std::string coordinator;  // ADDR:PORT
  std::string secret;
  coordpb::RegisterHost registration;  // host, metrics address, slots
  // The long poll's length; the coordinator answers sooner on a change.
  absl::Duration poll = absl::Seconds(1);
  // Assignments (complete, or with users only when users_included).
  std::function<void(const coordpb::Assignments&)> on_assignments;
  // The coordinator answered a heartbeat sent at this time (SinceBoot()).
  std::function<void(absl::Duration sent)> on_heard;
  // The slots' status for the next heartbeat.
  std::function<std::vector<coordpb::SlotStatus>()> status;
};

class CoordinatorLink {
 public:
  CoordinatorLink(asio::io_context& io, CoordinatorLinkOptions options);
  ~CoordinatorLink();
  CoordinatorLink(const CoordinatorLink&) = delete;
  CoordinatorLink& operator=(const CoordinatorLink&) = delete;

  // Until Stop().
  asio::awaitable<void> Run();
  void Stop();
  // Sends the slots' status now, on a second connection, without waiting
  // for the long poll (coalesced: one report in flight, one more after it
  // if asked again meanwhile). Its reply's assignments are applied too.
  void ReportNow();
  // Poll length, adjusted once the lease period is known (a third of it).
  void set_poll(absl::Duration poll) { options_.poll = poll; }
  bool connected() const { return connected_; }
  absl::Duration last_heard() const { return last_heard_; }  // SinceBoot() of the send

 private:
  asio::awaitable<absl::Status> Register();
  asio::awaitable<absl::Status> Beat();
  asio::awaitable<void> Report();
  // Applies a heartbeat reply's assignments unless they are older than
  // what was applied already (the long poll and a report may cross).
  void Absorb(const coordpb::HeartbeatReply& reply, absl::Duration sent);
  coordpb::Request HeartbeatRequest(absl::Duration wait);

  asio::io_context& io_;
  CoordinatorLinkOptions options_;
  std::unique_ptr<rpc::RpcClient> client_;
  std::unique_ptr<rpc::RpcClient> reporter_;
  bool reporting_ = false;
  bool report_again_ = false;
  asio::steady_timer pause_;
  bool stopping_ = false;
  bool registered_ = false;
  std::atomic<bool> connected_ = false;  // read by LMTP threads (Replicad::Directory)
  absl::Duration last_heard_ = -absl::InfiniteDuration();
  uint64_t version_ = 0;
  uint64_t directory_version_ = 0;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_COORDINATOR_LINK_H_
