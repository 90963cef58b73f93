#include "transport/server.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/log_exceptions.h"
#include "transport/net.h"

namespace mailrepl::transport {

using asio::awaitable;
using asio::use_awaitable;

ServerCore::ServerCore(asio::io_context& io, ServerOptions options)
    : io_(io), options_(std::move(options)), acceptor_(io), backoff_(io), changed_(io) {
  changed_.expires_at(asio::steady_timer::time_point::max());
}

ServerCore::~ServerCore() = default;

absl::Status ServerCore::Listen() {
  return ListenOn(acceptor_, options_.listen, options_.free_bind);
}

uint16_t ServerCore::port() const {
  asio::error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void ServerCore::StopAccepting() {
  stopping_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  backoff_.cancel();
  changed_.cancel();
}

bool ServerCore::AtCap() const {
  return options_.max_connections != 0 && stats_.open >= options_.max_connections;
}

awaitable<void> ServerCore::WaitForChange() {
  asio::error_code ec;  // cancelled is the only way it completes
  co_await changed_.async_wait(asio::redirect_error(use_awaitable, ec));
}

void ServerCore::SessionEnded(const std::string& peer, std::exception_ptr e) {
  if (e) {
    ++stats_.session_failures;
    LogExceptions(absl::StrCat(options_.name, " session with ", peer))(e);
  }
  --stats_.open;
  changed_.cancel();
}

awaitable<void> ServerCore::Run() {
  if (!stopping_ && !acceptor_.is_open()) {
    LogLine(Severity::kError, "server not listening: call Listen() before Run()",
            Kv("server", options_.name) + Kv("listen", options_.listen));
    co_return;
  }
  absl::Duration backoff = options_.accept_backoff_min;
  uint64_t episode_errors = 0;  // accept errors since the last success
  bool capped = false;          // in a cap episode (logged)
  while (!stopping_) {
    if (AtCap() && !options_.refuse) {
      if (!capped) {
        capped = true;
        LogLine(Severity::kWarning, "connection cap reached, accepting paused",
                Kv("server", options_.name) + Kv("max_connections", options_.max_connections));
      }
      co_await WaitForChange();
      continue;
    }
    asio::error_code ec;
    asio::ip::tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (stopping_) break;
    if (ec) {
      // Out of descriptors, say: the listening socket stays readable, so
      // accepting again at once would spin.
      ++stats_.accept_errors;
      if (episode_errors++ == 0) {
        LogLine(Severity::kWarning, "accept failed, backing off",
                Kv("server", options_.name) + Kv("error", ec.message()) +
                    Kv("max_backoff", absl::FormatDuration(options_.accept_backoff_max)));
      }
      backoff_.expires_after(absl::ToChronoNanoseconds(backoff));
      co_await backoff_.async_wait(asio::redirect_error(use_awaitable, ec));
      backoff = std::min(backoff * 2, options_.accept_backoff_max);
      continue;
    }
    if (episode_errors > 0) {
      LogLine(Severity::kInfo, "accepting again", Kv("server", options_.name) +
                                                      Kv("failed_accepts", episode_errors));
      episode_errors = 0;
      backoff = options_.accept_backoff_min;
    }
    if (AtCap()) {
      ++stats_.refused;
      if (!capped) {
        capped = true;
        LogLine(Severity::kWarning, "connection cap reached, refusing new connections",
                Kv("server", options_.name) + Kv("max_connections", options_.max_connections));
      }
      socket.non_blocking(true, ec);
      if (!ec) options_.refuse(socket);
      socket.close(ec);
      continue;
    }
    // The episode ends when a connection finds room to spare (not each time
    // a session ends under a steady load at the cap).
    if (options_.max_connections == 0 || stats_.open + 1 < options_.max_connections) {
      capped = false;
    }
    std::string peer = PeerAddress(socket);
    ++stats_.accepted;
    ++stats_.open;
    StartSession(std::move(socket), std::move(peer));
  }
  while (stats_.open > 0) co_await WaitForChange();
}

}  // namespace mailrepl::transport
