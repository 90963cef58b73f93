// File: tools/dev_cluster.h
//
// `replctl dev-cluster up|down|stop|start|restart`: a whole cluster on one
// machine, on loopback addresses (docs/operations.md "A local cluster"). Up
// starts a coordinatord and one replicad per host, each slot on its own
// address (NET.x), pairs slots of different hosts into stores with masters
// spread over the hosts, assigns users to stores round-robin, waits until
// every master takes writes, and writes DIR/cluster.json.
//
// Every process the cluster starts (up, start, restart) is tracked in
// DIR/run: NAME.pid while it runs (NAME: `coordinator`, `host1`, ...) and
// NAME.cmdline, its command line as up made it (NUL-separated, like
// /proc/PID/cmdline), which start runs again. A pid counts only while
// /proc/PID/cmdline names the expected binary and the process's config (a
// host's replicad.conf) or database (DIR/coordinator.db): a pid file of an
// exited process, or of a pid reused by another program, is stale and is
// removed. Stop and down send SIGTERM, then SIGKILL after a grace period.
// The commands hold DIR/run/lock (flock), so that two of them on one
// directory never interleave. A replicad started by hand is not tracked
// (replicad writes no pid file): start hosts with DevClusterStart.
#ifndef MAILREPL_TOOLS_DEV_CLUSTER_H_
#define MAILREPL_TOOLS_DEV_CLUSTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/config.pb.h"

namespace mailrepl::tools {

struct DevClusterOptions {
  std::string dir;                 // absolute or relative; made absolute
  std::string bin_dir;             // where coordinatord and replicad are
  int hosts = 3;
  int slots_per_host = 4;
  int replicas = 1;                // per store
  int users = 100;                 // user0 .. user{N-1}
  std::string net = "127.0.2";     // first three octets of every address
  // Store k's service addresses: SERVICE_NET.k, LMTP and API ports as the
  // slots' (docs/operations.md "Service addresses"). Empty: none.
  std::string service_net = "127.0.1";
  // Every replicad's promote and demote hooks (replicad.conf); empty: none.
  std::string promote_hook;
  std::string demote_hook;
  uint32_t lease_ms = 6000;
  uint32_t vouch_grace_ms = 30000;  // coordinatord --vouch-grace-ms
  std::string durability = "async";
  absl::Duration timeout = absl::Seconds(60);
};

// Starts the cluster; returns what cluster.json holds. Refused while a
// process of an earlier cluster in the same directory still runs.
absl::StatusOr<configpb::DevCluster> DevClusterUp(const DevClusterOptions& options);

// Stops every process of the cluster in dir that runs (hosts and
// coordinator at once; SIGKILL for those still running after `grace`).
// Returns one line per process: what happened to it. OK (no lines) if
// there is no cluster in dir.
absl::StatusOr<std::vector<std::string>> DevClusterDown(const std::string& dir,
                                                        absl::Duration grace);

// Stops one process of the cluster in dir: `name` is `coordinator` or a
// host of cluster.json. SIGTERM, then SIGKILL after `grace` (the line says
// so); returns once the process is gone. One that does not run is no error
// (the line says so). InvalidArgument for an unknown name, NotFound if dir
// holds no cluster.
absl::StatusOr<std::string> DevClusterStop(const std::string& dir, const std::string& name,
                                           absl::Duration grace);

// Starts one process of the cluster in dir with the command line up used
// and records its pid; returns once a host registered with the coordinator
// (or the coordinator answers), at most `timeout`. One that already runs is
// no error (the line says so). Fails if the process exits meanwhile (the
// error quotes its log). When the coordinator does not answer, a host is
// started without waiting (the line says so).
absl::StatusOr<std::string> DevClusterStart(const std::string& dir, const std::string& name,
                                            absl::Duration timeout);

// DevClusterStop, then DevClusterStart, under one lock; one line each.
absl::StatusOr<std::vector<std::string>> DevClusterRestart(const std::string& dir,
                                                           const std::string& name,
                                                           absl::Duration grace,
                                                           absl::Duration timeout);

// Reads DIR/cluster.json (or a path to a cluster.json).
absl::StatusOr<configpb::DevCluster> ReadClusterFile(const std::string& path);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_DEV_CLUSTER_H_
