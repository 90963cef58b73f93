// File: replicad/replicad.h
//
// The host daemon: one process per host (docs/architecture.md "replicad").
// Hosts the slots its config lists (a SlotHost each), follows the
// coordinator's assignments through a CoordinatorLink, keeps the last
// assignments in a role cache on local disk (STATE_DIR/roles.pb) so that a
// restart without the coordinator serves the same roles, keeps the user
// directory for LMTP routing, and serves /metrics and /health.
//
// Owns the host's worker pool (HostPool, replicad/work_pool.h): every
// slot's blocking work, the hooks and the role cache's writes run there,
// never on the io thread.
//
// Thread-compatible: everything runs on the io_context it is given; the
// pool calls back into it through SlotHost's thread-safe parts and the
// directory (a mutex).
#ifndef MAILREPL_REPLICAD_REPLICAD_H_
#define MAILREPL_REPLICAD_REPLICAD_H_

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "asio.hpp"
#include "common/mutex.h"
#include "proto/config.pb.h"
#include "proto/coord.pb.h"
#include "replicad/hooks.h"
#include "replicad/lmtp_reply.h"
#include "replicad/work_pool.h"

namespace mailrepl::metrics {
class MetricsServer;
}  // namespace mailrepl::metrics

namespace mailrepl::replicad {

class CoordinatorLink;
class SlotHost;

class Replicad {
 public:
  Replicad(asio::io_context& io, configpb::ReplicadConfig config, std::string secret);
  ~Replicad();
  Replicad(const Replicad&) = delete;
  Replicad& operator=(const Replicad&) = delete;

  // Applies the role cache, binds the metrics port, starts the coordinator
  // link. Errors: the state directory or metrics port cannot be used.
  absl::Status Start();
  // SIGTERM: stops accepting everywhere; in-flight writes finish. done()
  // turns true once every slot has wound down.
  void Stop();
  bool done() const;

  std::string MetricsText();
  bool Healthy(std::string* text);
  // The host's worker pool, for blocking work of the slots (and, once it
  // takes one, SyncServerOptions.blocking).
  asio::any_io_executor blocking_executor() { return pool_->executor(); }

 private:
  void ApplyAssignments(const coordpb::Assignments& a);
  // Writes the role cache on the pool (an fsync), the latest last.
  void SaveRoleCache();
  void WriteRoleCache();
  std::optional<lmtp::LmtpReply> Directory(const std::string& user, uint64_t store_id);
  // RecordSalvage at the coordinator, for a slot's salvager.
  asio::awaitable<absl::Status> RecordSalvage(coordpb::RecordSalvage salvage);

  asio::io_context& io_;
  configpb::ReplicadConfig config_;
  std::string secret_;
  // Used by everything below, so declared first (destroyed last).
  std::unique_ptr<HostPool> pool_;
  std::unique_ptr<WorkGate> role_cache_work_;  // one write at a time
  std::unique_ptr<Hooks> hooks_;  // used by slots_, so declared before them (destroyed after)
  std::map<uint64_t, std::unique_ptr<SlotHost>> slots_;
  std::unique_ptr<CoordinatorLink> link_;
  std::unique_ptr<metrics::MetricsServer> metrics_;
  coordpb::Assignments known_;  // merged: last slots + last directory
  bool stopping_ = false;
  bool link_done_ = true;

  // The role cache to write next (SaveRoleCache -> WriteRoleCache).
  Mutex role_cache_mu_;
  std::optional<std::string> role_cache_next_ ABSL_GUARDED_BY(role_cache_mu_);

  Mutex directory_mu_;
  absl::flat_hash_map<std::string, uint64_t> directory_ ABSL_GUARDED_BY(directory_mu_);
  bool directory_known_ ABSL_GUARDED_BY(directory_mu_) = false;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_REPLICAD_H_
