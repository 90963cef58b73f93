// File: coordinator/socketmap_server.h
//
// Serves Postfix's socketmap lookup protocol (socketmap_table(5);
// docs/protocol.md "Socketmap routing lookups") on a TCP port of
// coordinatord, so that Postfix routes mail to each user's current master
// with `transport_maps = socketmap:inet:ADDR:PORT:transport`. Each request
// is one netstring "NAME KEY" (coordinator/netstring.h), answered by
// RoutingMaps with one netstring; a connection carries any number of them
// in turn (Postfix keeps its connection open). Bad input (not a netstring,
// longer than max_request, not "NAME KEY", an unknown map) gets a "PERM
// ..." reply and closes that connection only; an idle connection is closed
// after idle_timeout. Connections beyond max_connections wait in the listen
// backlog until one closes (transport::Server).
//
// Thread-compatible: construct, Listen(), Run() and Stop() on the thread
// running the io_context; the lookups run there too (the Coordinator's
// thread).
//
// Example:
//   RoutingMaps maps([&](absl::string_view u) { return c.UserStore(u); });
//   SocketmapServer server(io, {.listen = "127.0.0.1:0"}, maps);
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), LogExceptions("socketmap server"));
#ifndef MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_
#define MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "coordinator/routing_maps.h"
#include "transport/server.h"

namespace mailrepl::coord {

// The longest request accepted: a map name and a mail address (at most
// 256 bytes by RFC 5321) fit many times over.
inline constexpr size_t kMaxSocketmapRequest = 4096;

struct SocketmapServerOptions {
  std::string listen;  // ADDR:PORT; port 0 = any free port
  size_t max_request = kMaxSocketmapRequest;
  absl::Duration idle_timeout = absl::Minutes(10);   // between requests
  absl::Duration write_timeout = absl::Seconds(10);  // a peer that does not read
  // Connections open at once; more wait in the backlog. 0 = no cap.
  size_t max_connections = 1000;
};

struct SocketmapServerStats {
  uint64_t connections = 0;  // accepted
  uint64_t accept_errors = 0;  // failed accepts (out of descriptors...)
  uint64_t session_failures = 0;  // sessions ended by an exception (logged)
  uint64_t requests = 0;
  uint64_t bad_requests = 0;  // connections closed for bad input
};

class SocketmapServer {
 public:
  // `maps` must outlive the server.
  SocketmapServer(asio::io_context& io, SocketmapServerOptions options, RoutingMaps& maps);
  ~SocketmapServer();
  SocketmapServer(const SocketmapServer&) = delete;
  SocketmapServer& operator=(const SocketmapServer&) = delete;

  // kInvalidArgument for a bad address, kUnavailable if it cannot bind.
  absl::Status Listen();
  uint16_t port() const;  // after Listen()
  // Accepts connections until Stop(), then returns once every connection
  // has closed. Keep the server alive until then.
  asio::awaitable<void> Run();
  // Stops accepting and closes every connection.
  void Stop();
  SocketmapServerStats stats() const;
  size_t sessions() const { return server_.sessions().size(); }

 private:
  using Socket = asio::ip::tcp::socket;
  struct Connection {
    Socket socket;
    std::string peer;
  };
  asio::awaitable<void> Session(std::shared_ptr<Connection> conn);
  // Reads and discards until the peer closes, at most 1 s and 1 MiB.
  asio::awaitable<void> Drain(Socket& socket);
  // Writes all of `bytes`; false if the peer is gone or too slow.
  asio::awaitable<bool> Write(Socket& socket, const std::string& bytes);

  asio::io_context& io_;
  SocketmapServerOptions options_;
  RoutingMaps& maps_;
  transport::Server<Connection> server_;
  SocketmapServerStats stats_;  // the session counters; stats() adds the server's
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_
