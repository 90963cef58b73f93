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
// after idle_timeout.
//
// Thread-compatible: construct, Listen(), Run() and Stop() on the thread
// running the io_context; the lookups run there too (the Coordinator's
// thread).
//
// Example:
//   RoutingMaps maps([&](absl::string_view u) { return c.UserStore(u); });
//   SocketmapServer server(io, {.listen = "127.0.0.1:0"}, maps);
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), asio::detached);
#ifndef MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_
#define MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "coordinator/routing_maps.h"

namespace mailrepl::coord {

// The longest request accepted: a map name and a mail address (at most
// 256 bytes by RFC 5321) fit many times over.
inline constexpr size_t kMaxSocketmapRequest = 4096;

struct SocketmapServerOptions {
  std::string listen;  // ADDR:PORT; port 0 = any free port
  size_t max_request = kMaxSocketmapRequest;
  absl::Duration idle_timeout = absl::Minutes(10);   // between requests
  absl::Duration write_timeout = absl::Seconds(10);  // a peer that does not read
};

struct SocketmapServerStats {
  uint64_t connections = 0;
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
  // Accepts connections until Stop().
  asio::awaitable<void> Run();
  // Stops accepting and closes every connection.
  void Stop();
  const SocketmapServerStats& stats() const { return stats_; }
  size_t sessions() const { return sessions_.size(); }

 private:
  using Socket = asio::ip::tcp::socket;
  asio::awaitable<void> Session(std::shared_ptr<Socket> socket, std::string peer);
  // Reads and discards until the peer closes, at most 1 s and 1 MiB.
  asio::awaitable<void> Drain(Socket& socket);
  // Writes all of `bytes`; false if the peer is gone or too slow.
  asio::awaitable<bool> Write(Socket& socket, const std::string& bytes);

  asio::io_context& io_;
  SocketmapServerOptions options_;
  RoutingMaps& maps_;
  asio::ip::tcp::acceptor acceptor_;
  std::set<std::shared_ptr<Socket>> sessions_;
  SocketmapServerStats stats_;
  bool stopping_ = false;
};

}  // namespace mailrepl::coord

#endif  // MAILREPL_COORDINATOR_SOCKETMAP_SERVER_H_
