// File: rpc/rpc_server.h
//
// The server side of a request/response service (the coordinator RPC, the
// client API): accepts TCP connections, authenticates each client with the
// shared secret (docs/protocol.md "Request/response services"), then hands
// every Call's request bytes to the handler and sends back its answer as a
// Reply. Calls on one connection are answered in order, one at a time (a
// long poll holds only its own connection); connections run concurrently.
// A bad frame, a failed login or an unknown service closes that connection
// only, with a Reply naming the reason.
//
// Thread-compatible: construct, Listen(), Run() and Stop() on the thread
// running the io_context; the handler runs there too (offload blocking
// work yourself).
//
// Example:
//   RpcServer server(io, {.listen = "127.0.0.1:0", .service = "api",
//                         .secret = secret},
//                    [&](std::string request, const RpcPeer& peer)
//                        -> asio::awaitable<absl::StatusOr<std::string>> {
//                      co_return Answer(request);
//                    });
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), LogExceptions("api server"));
//
// Connections beyond max_connections wait in the listen backlog until a
// session ends (transport::Server, like every listener).
#ifndef MAILREPL_RPC_RPC_SERVER_H_
#define MAILREPL_RPC_RPC_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "transport/framed_connection.h"
#include "transport/server.h"

namespace mailrepl::rpc {

inline constexpr uint32_t kRpcVersionMajor = 1;
inline constexpr uint32_t kRpcVersionMinor = 0;

struct RpcServerOptions {
  std::string listen;    // ADDR:PORT; port 0 = any free port
  std::string service;   // "coordinator", "api"
  std::string secret;    // the shared secret's bytes
  bool free_bind = false;  // IP_FREEBIND (service addresses)
  absl::Duration login_timeout = absl::Seconds(10);
  absl::Duration idle_timeout = absl::Minutes(10);  // between calls
  // Connections open at once; more wait in the backlog. 0 = no cap.
  size_t max_connections = 1000;
};

// Who is calling (for logs and events).
struct RpcPeer {
  std::string address;  // ADDR:PORT
  std::string client;   // the name the client gave at login
};

using RpcHandler = std::function<asio::awaitable<absl::StatusOr<std::string>>(
    std::string request, const RpcPeer& peer)>;

struct RpcServerStats {
  uint64_t connections = 0;  // accepted
  uint64_t accept_errors = 0;  // failed accepts (out of descriptors...)
  uint64_t session_failures = 0;  // sessions ended by an exception (logged)
  uint64_t auth_failures = 0;
  uint64_t bad_frames = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;  // calls answered with an error
};

class RpcServer {
 public:
  RpcServer(asio::io_context& io, RpcServerOptions options, RpcHandler handler);
  ~RpcServer();
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // kInvalidArgument for a bad address, kUnavailable when it cannot bind.
  absl::Status Listen();
  uint16_t port() const;  // after Listen()
  // Accepts connections until Stop(), then returns once every session has
  // ended (a session in a handler ends when the handler returns). Keep the
  // server alive until then.
  asio::awaitable<void> Run();
  // Stops accepting and closes every connection (a call in flight is
  // answered if its handler finishes before the connection is gone).
  void Stop();
  RpcServerStats stats() const;

 private:
  using Conn = transport::RpcConnection;
  asio::awaitable<void> Session(std::shared_ptr<Conn> conn);
  asio::awaitable<void> Serve(std::shared_ptr<Conn> conn);
  asio::awaitable<absl::Status> Login(Conn& conn, RpcPeer* peer);

  RpcServerOptions options_;
  RpcHandler handler_;
  transport::Server<Conn> server_;
  RpcServerStats stats_;  // the session counters; stats() adds the server's
};

}  // namespace mailrepl::rpc

#endif  // MAILREPL_RPC_RPC_SERVER_H_
