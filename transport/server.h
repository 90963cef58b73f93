// The accept side every TCP listener shares (RPC, LMTP, socketmap, metrics,
// sync): binds with ListenOn, accepts in a coroutine, caps the open
// connections, backs off on accept errors, keeps the set of open sessions,
// logs a session that ends by an exception, and stops cleanly. The owner
// says what a connection is (Conn, made from the accepted socket) and what
// a session does with it.
//
// At the cap (max_connections open sessions): without `refuse`, accepting
// pauses until a session ends, and new connections wait in the kernel's
// backlog. With `refuse`, each new connection is accepted, handed to refuse
// (the socket is non-blocking: write a short refusal such as LMTP's 421 with
// one write_some, never wait) and closed. One log line per cap episode (it
// ends when a connection is admitted with room to spare).
//
// Accept errors (EMFILE when out of descriptors, ENFILE, ENOBUFS...): the
// next accept waits accept_backoff_min, doubling to accept_backoff_max, and
// the first successful accept resets the wait. One warning when an episode
// begins and one line with its error count when it ends.
//
// Stop() closes the acceptor and calls end_session on every open session
// (close it, wake it, send it a last frame: the owner decides). Run()
// returns once the accept loop has stopped and every session has ended.
//
// Thread-compatible: construct, Listen(), Run(), Stop() and read stats()
// on the thread running the io_context; sessions run there too. Destroy the
// server only after Run() has returned (sessions refer to it), or if Run()
// never ran.
//
// Example:
//   struct Conn { asio::ip::tcp::socket socket; std::string peer; };
//   transport::Server<Conn> server(
//       io, {.name = "echo", .listen = "127.0.0.1:0", .max_connections = 100},
//       [](asio::ip::tcp::socket s, std::string peer) {
//         return std::make_shared<Conn>(Conn{std::move(s), std::move(peer)});
//       },
//       [](std::shared_ptr<Conn> c) -> asio::awaitable<void> { co_await Echo(c->socket); });
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), LogExceptions("echo server"));
//   ...
//   server.Stop([](Conn& c) { asio::error_code ec; c.socket.close(ec); });
#ifndef MAILREPL_TRANSPORT_SERVER_H_
#define MAILREPL_TRANSPORT_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"

namespace mailrepl::transport {

struct ServerOptions {
  std::string name;  // in log lines: "lmtp", "rpc api", "metrics"...
  std::string listen;  // ADDR:PORT; port 0 = any free port
  bool free_bind = false;  // IP_FREEBIND (service addresses)
  size_t max_connections = 1000;  // open sessions at once; 0 = no cap
  // At the cap: writes a refusal on the (non-blocking) socket before it is
  // closed. Unset: accepting pauses instead.
  std::function<void(asio::ip::tcp::socket&)> refuse;
  absl::Duration accept_backoff_min = absl::Milliseconds(10);
  absl::Duration accept_backoff_max = absl::Seconds(1);
};

// Counters since construction.
struct ServerStats {
  uint64_t accepted = 0;          // connections that got a session
  uint64_t refused = 0;           // closed at the cap (with `refuse`)
  uint64_t accept_errors = 0;     // failed accepts
  uint64_t session_failures = 0;  // sessions ended by an exception
  uint64_t open = 0;              // sessions running now
};

// The part of Server that does not depend on the connection type.
class ServerCore {
 public:
  ServerCore(asio::io_context& io, ServerOptions options);
  virtual ~ServerCore();
  ServerCore(const ServerCore&) = delete;
  ServerCore& operator=(const ServerCore&) = delete;

  // kInvalidArgument for a bad address, kUnavailable when it cannot bind.
  absl::Status Listen();
  uint16_t port() const;  // after Listen()
  // Accepts until Stop(), then returns once every session has ended.
  asio::awaitable<void> Run();
  bool stopping() const { return stopping_; }
  const ServerStats& stats() const { return stats_; }
  const ServerOptions& options() const { return options_; }

 protected:
  // Stops accepting (the sessions go on).
  void StopAccepting();
  // Starts a session on an admitted connection; calls SessionEnded() when
  // it has ended.
  virtual void StartSession(asio::ip::tcp::socket socket, std::string peer) = 0;
  void SessionEnded(const std::string& peer, std::exception_ptr e);

  asio::io_context& io_;

 private:
  bool AtCap() const;
  // Waits until SessionEnded() or Stop() is called.
  asio::awaitable<void> WaitForChange();

  const ServerOptions options_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer backoff_;  // the wait after an accept error
  asio::steady_timer changed_;  // never expires; cancelled to wake WaitForChange()
  ServerStats stats_;
  bool stopping_ = false;
};

template <typename Conn>
class Server : public ServerCore {
 public:
  // Makes the connection object of an accepted socket; peer is "ip:port".
  using MakeConn = std::function<std::shared_ptr<Conn>(asio::ip::tcp::socket, std::string peer)>;
  // Serves one connection; the session ends when the awaitable completes.
  using Session = std::function<asio::awaitable<void>(std::shared_ptr<Conn>)>;

  Server(asio::io_context& io, ServerOptions options, MakeConn make, Session session)
      : ServerCore(io, std::move(options)), make_(std::move(make)), session_(std::move(session)) {}

  // Stops accepting and calls end_session (if set) on every open session.
  void Stop(const std::function<void(Conn&)>& end_session = nullptr) {
    StopAccepting();
    if (end_session) ForEachSession(end_session);
  }
  // Calls fn on every open session (e.g. to send each a last frame).
  void ForEachSession(const std::function<void(Conn&)>& fn) {
    // A copy: fn may let a session end (and leave the set) before it returns.
    const std::vector<std::shared_ptr<Conn>> open(sessions_.begin(), sessions_.end());
    for (const std::shared_ptr<Conn>& c : open) fn(*c);
  }
  const std::set<std::shared_ptr<Conn>>& sessions() const { return sessions_; }

 private:
  void StartSession(asio::ip::tcp::socket socket, std::string peer) override {
    std::shared_ptr<Conn> conn = make_(std::move(socket), peer);
    sessions_.insert(conn);
    asio::co_spawn(io_, session_(conn),
                   [this, conn, peer = std::move(peer)](std::exception_ptr e) {
                     sessions_.erase(conn);
                     SessionEnded(peer, e);
                   });
  }

  MakeConn make_;
  Session session_;
  std::set<std::shared_ptr<Conn>> sessions_;
};

}  // namespace mailrepl::transport

#endif  // MAILREPL_TRANSPORT_SERVER_H_
