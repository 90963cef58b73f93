#include "coordinator/socketmap_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "common/log.h"
#include "coordinator/netstring.h"

namespace mailrepl::coord {

using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

SocketmapServer::SocketmapServer(asio::io_context& io, SocketmapServerOptions options,
                                 RoutingMaps& maps)
    : io_(io),
      options_(std::move(options)),
      maps_(maps),
      server_(io,
              {.name = "socketmap",
               .listen = options_.listen,
               .max_connections = options_.max_connections},
              [](Socket socket, std::string peer) {
                return std::make_shared<Connection>(
                    Connection{std::move(socket), std::move(peer)});
              },
              [this](std::shared_ptr<Connection> conn) { return Session(std::move(conn)); }) {}

SocketmapServer::~SocketmapServer() = default;

absl::Status SocketmapServer::Listen() { return server_.Listen(); }

uint16_t SocketmapServer::port() const { return server_.port(); }

awaitable<void> SocketmapServer::Run() { return server_.Run(); }

void SocketmapServer::Stop() {
  server_.Stop([](Connection& conn) {
    asio::error_code ec;
    conn.socket.close(ec);
  });
}

SocketmapServerStats SocketmapServer::stats() const {
  SocketmapServerStats s = stats_;
  s.connections = server_.stats().accepted;
  s.accept_errors = server_.stats().accept_errors;
  s.session_failures = server_.stats().session_failures;
  return s;
}

awaitable<bool> SocketmapServer::Write(Socket& socket, const std::string& bytes) {
  asio::steady_timer timer(io_, absl::ToChronoNanoseconds(options_.write_timeout));
  // One error code each: the operation that loses the race completes too
  // (cancelled) and must not overwrite the winner's.
  asio::error_code ec, timer_ec;
  auto written = co_await (
      asio::async_write(socket, asio::buffer(bytes), asio::redirect_error(use_awaitable, ec)) ||
      timer.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
  co_return written.index() == 0 && !ec;
}

awaitable<void> SocketmapServer::Drain(Socket& socket) {
  constexpr size_t kMaxDrain = 1 << 20;
  asio::steady_timer timer(io_, std::chrono::seconds(1));
  char chunk[4096];
  size_t drained = 0;
  asio::error_code ec, timer_ec;
  while (!server_.stopping() && drained < kMaxDrain) {
    auto read = co_await (
        socket.async_read_some(asio::buffer(chunk), asio::redirect_error(use_awaitable, ec)) ||
        timer.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
    if (read.index() == 1 || ec) break;
    drained += std::get<0>(read);
  }
}

awaitable<void> SocketmapServer::Session(std::shared_ptr<Connection> conn) {
  Socket* const socket = &conn->socket;
  const std::string& peer = conn->peer;
  std::string buffer;
  char chunk[4096];
  std::string bad;  // why the connection is closed, for the log
  while (!server_.stopping()) {
    const NetstringParse p = ParseNetstring(buffer, options_.max_request);
    if (p.result == NetstringResult::kBad) {
      bad = p.error;
      ++stats_.bad_requests;
      const std::string reply =
          EncodeNetstring(absl::StrCat("PERM ", p.error, ": closing the connection"));
      const bool ok = co_await Write(*socket, reply);
      (void)ok;  // closing either way
      break;
    }
    if (p.result == NetstringResult::kGood) {
      ++stats_.requests;
      RoutingAnswer answer = maps_.Answer(p.payload);
      buffer.erase(0, p.consumed);
      const std::string reply = EncodeNetstring(answer.reply);
      const bool ok = co_await Write(*socket, reply);
      if (!ok) break;
      if (answer.close) {
        bad = answer.reply;
        ++stats_.bad_requests;
        break;
      }
      continue;
    }
    asio::steady_timer idle(io_, absl::ToChronoNanoseconds(options_.idle_timeout));
    asio::error_code ec, idle_ec;
    auto read = co_await (
        socket->async_read_some(asio::buffer(chunk), asio::redirect_error(use_awaitable, ec)) ||
        idle.async_wait(asio::redirect_error(use_awaitable, idle_ec)));
    if (read.index() == 1 || ec) break;  // idle, closed by the peer, or Stop()
    buffer.append(chunk, std::get<0>(read));
  }
  asio::error_code ec;
  if (!bad.empty()) {
    LogLine(Severity::kWarning, "socketmap connection closed",
            Kv("peer", peer) + Kv("reason", bad));
    // A lingering close: closing with unread input would send a reset that
    // can destroy the PERM reply before the peer reads it. Say we are done
    // (FIN after the reply), then discard what the peer still sends until
    // it closes, for a short while and a bounded amount.
    socket->shutdown(Socket::shutdown_send, ec);
    co_await Drain(*socket);
  }
  socket->shutdown(Socket::shutdown_both, ec);
  socket->close(ec);
}

}  // namespace mailrepl::coord
