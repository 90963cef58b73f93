// coordinatord: the cluster's authority on topology (which slot is master
// of each store, at which epoch), the user directory and the master leases,
// kept in one SQLite file and served over the coordinator RPC
// (proto/coord.proto). docs/operations.md "coordinatord".
// Exit codes: 0 stopped cleanly (SIGTERM/SIGINT); 2 could not run.
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "asio.hpp"
#include "common/log.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/routing_maps.h"
#include "coordinator/schema.h"
#include "coordinator/socketmap_server.h"
#include "rpc/rpc_server.h"
#include "transport/auth.h"

namespace {

constexpr char kUsage[] = R"(usage: coordinatord --db FILE --listen ADDR:PORT --secret-file FILE [options]

Serves the coordinator RPC on ADDR:PORT (port 0: any free port), keeping the
cluster's topology, user directory, leases and event history in the SQLite
database FILE (created if missing).

Options:
  --cluster-id ID   the cluster's id, used only when FILE is created (default:
                    a random id); with an existing FILE it must match
  --lease-ms N      master lease period in ms, 100..3600000 (default 6000);
                    a new value is stored and sent to every host
  --vouch-grace-ms N
                    how long past its own coordinator contact a replica
                    still vouches for its master (default 30000): mail
                    flows that long through a coordinator outage, and a
                    forced promotion may wait that long more when a
                    replica did not learn the new epoch
  --socketmap-listen ADDR:PORT
                    also serve Postfix's socketmap lookups (maps "transport"
                    and "mailbox") on ADDR:PORT; docs/operations.md
                    "Routing mail with Postfix"
  --socketmap-domains D1,D2,...
                    the mail domains the cluster holds: the maps answer
                    NOTFOUND for user@OTHER-DOMAIN (default: any domain)
  --help            this text
SIGTERM or SIGINT answers the waiting heartbeats, closes connections, exits 0.
Prints "coordinatord listening ... port=<N>" on stderr once it accepts
connections (and socketmap_port=<N> with --socketmap-listen).
)";

constexpr uint64_t kMinLeaseMs = 100;
constexpr uint64_t kMaxLeaseMs = 3'600'000;

int Usage(const std::string& error) {
  std::cerr << "coordinatord: " << error << "\n" << kUsage;
  return 2;
}

int Fail(const std::string& error) {
  std::cerr << "coordinatord: " << error << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mailrepl;
  std::string db_path, listen, secret_file, cluster_id, socketmap_listen;
  std::vector<std::string> socketmap_domains;
  uint64_t lease_ms = 6000;
  uint32_t vouch_grace_ms = coord::kDefaultVouchGraceMs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string v;
    const bool takes_value = a == "--db" || a == "--listen" || a == "--secret-file" ||
                             a == "--cluster-id" || a == "--lease-ms" || a == "--vouch-grace-ms" ||
                             a == "--socketmap-listen" || a == "--socketmap-domains";
    if (takes_value) {
      if (i + 1 >= argc) return Usage(a + " needs a value");
      v = argv[++i];
    }
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--db") {
      db_path = v;
    } else if (a == "--listen") {
      listen = v;
    } else if (a == "--secret-file") {
      secret_file = v;
    } else if (a == "--socketmap-listen") {
      socketmap_listen = v;
    } else if (a == "--socketmap-domains") {
      socketmap_domains = absl::StrSplit(v, ',', absl::SkipEmpty());
    } else if (a == "--cluster-id") {
      cluster_id = v;
      if (cluster_id.empty()) return Usage("--cluster-id must not be empty");
    } else if (a == "--lease-ms") {
      if (!absl::SimpleAtoi(v, &lease_ms) || lease_ms < kMinLeaseMs || lease_ms > kMaxLeaseMs) {
        return Usage(absl::StrCat("--lease-ms: '", v, "' is not a number in ", kMinLeaseMs, "..",
                                  kMaxLeaseMs));
      }
    } else if (a == "--vouch-grace-ms") {
      if (!absl::SimpleAtoi(v, &vouch_grace_ms) || vouch_grace_ms > kMaxLeaseMs) {
        return Usage(absl::StrCat("--vouch-grace-ms: '", v, "' is not a number in 0..",
                                  kMaxLeaseMs));
      }
    } else {
      return Usage("unknown argument '" + a + "'");
    }
  }
  if (db_path.empty() || listen.empty() || secret_file.empty()) {
    return Usage("--db, --listen and --secret-file are required");
  }
  absl::StatusOr<std::string> secret = transport::LoadSecret(secret_file);
  if (!secret.ok()) return Fail(absl::StrCat("--secret-file: ", secret.status().message()));

  absl::StatusOr<std::unique_ptr<coord::Coordinator>> coordinator = coord::Coordinator::Open(
      db_path, {.cluster_id = cluster_id,
                .lease_ms = static_cast<uint32_t>(lease_ms),
                .vouch_grace_ms = vouch_grace_ms});
  if (!coordinator.ok()) return Fail(std::string(coordinator.status().message()));
  coord::Coordinator& c = **coordinator;

  asio::io_context io;
  coord::CoordinatorService service(io, c);
  rpc::RpcServer server(io,
                        {.listen = listen, .service = coord::kCoordinatorService,
                         .secret = *secret},
                        service.Handler());
  if (absl::Status s = server.Listen(); !s.ok()) return Fail(std::string(s.message()));
  coord::RoutingMaps maps([&c](absl::string_view user) { return c.UserStore(user); },
                          socketmap_domains);
  std::unique_ptr<coord::SocketmapServer> socketmap;
  std::string socketmap_fields;
  if (!socketmap_listen.empty()) {
    socketmap = std::make_unique<coord::SocketmapServer>(
        io, coord::SocketmapServerOptions{.listen = socketmap_listen}, maps);
    if (absl::Status s = socketmap->Listen(); !s.ok()) {
      return Fail(absl::StrCat("--socketmap-listen: ", s.message()));
    }
    socketmap_fields = Kv("socketmap", socketmap_listen) + Kv("socketmap_port", socketmap->port());
  }
  const coord::Versions versions = c.versions();
  LogLine(Severity::kInfo, "coordinatord listening",
          Kv("listen", listen) + Kv("port", server.port()) + socketmap_fields + Kv("db", db_path) +
              Kv("cluster", c.cluster_id()) + Kv("lease_ms", c.lease_ms()) +
              Kv("version", versions.topology) + Kv("directory_version", versions.directory));

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const asio::error_code& ec, int signal) {
    if (ec) return;
    LogLine(Severity::kInfo, "coordinatord stopping", Kv("signal", signal));
    service.Shutdown();
    server.Stop();
    if (socketmap) socketmap->Stop();
  });
  if (socketmap) asio::co_spawn(io, socketmap->Run(), asio::detached);
  // Run() returns once the server stopped; the sessions then end and
  // io.run() returns when nothing is left.
  asio::co_spawn(io, server.Run(), [&](std::exception_ptr) {
    signals.cancel();
    if (socketmap) socketmap->Stop();
  });
  io.run();
  const coord::CoordinatorServiceStats& st = service.stats();
  const rpc::RpcServerStats& rs = server.stats();
  LogLine(Severity::kInfo, "coordinatord stopped",
          Kv("connections", rs.connections) + Kv("auth_failures", rs.auth_failures) +
              Kv("bad_frames", rs.bad_frames) + Kv("requests", st.requests) +
              Kv("errors", st.errors) + Kv("socketmap_lookups", maps.stats().lookups) +
              Kv("socketmap_temp", maps.stats().temp) +
              Kv("socketmap_bad_requests", socketmap ? socketmap->stats().bad_requests : 0));
  return 0;
}
