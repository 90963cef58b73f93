// File: tools/dev_cluster.h
//
// `replctl dev-cluster up|down`: a whole cluster on one machine, on
// loopback addresses (docs/operations.md "A local cluster"). Up starts a
// coordinatord and one replicad per host, each slot on its own address
// (NET.x), pairs slots of different hosts into stores with masters spread
// over the hosts, assigns users to stores round-robin, waits until every
// master takes writes, and writes DIR/cluster.json. Down stops the
// processes that up started (SIGTERM, then SIGKILL after a grace period).
#ifndef MAILREPL_TOOLS_DEV_CLUSTER_H_
#define MAILREPL_TOOLS_DEV_CLUSTER_H_

#include <cstdint>
#include <string>

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

// Starts the cluster; returns what cluster.json holds.
absl::StatusOr<configpb::DevCluster> DevClusterUp(const DevClusterOptions& options);
// Stops the cluster in dir. OK if nothing runs there.
absl::Status DevClusterDown(const std::string& dir, absl::Duration grace);

// Reads DIR/cluster.json (or a path to a cluster.json).
absl::StatusOr<configpb::DevCluster> ReadClusterFile(const std::string& path);

}  // namespace mailrepl::tools

#endif  // MAILREPL_TOOLS_DEV_CLUSTER_H_
