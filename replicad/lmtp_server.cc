#include "replicad/lmtp_server.h"

#include <array>
#include <chrono>
#include <exception>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "common/log.h"
#include "replicad/lmtp_parser.h"
#include "transport/server.h"

namespace mailrepl::lmtp {

using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

namespace {

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

}  // namespace

class LmtpServer::Impl {
 public:
  class Session;

  Impl(asio::io_context& io, LmtpBackend& backend, LmtpServerOptions options);

  LmtpBackend& backend_;
  const LmtpServerOptions options_;
  transport::Server<Session> listener_;
  LmtpServerStats stats_;  // the delivery counters; LmtpServer::stats() adds the server's
};

// One connection: reads, runs the parser's events, writes the replies.
class LmtpServer::Impl::Session {
 public:
  Session(Impl& server, tcp::socket socket, std::string peer)
      : server_(server),
        socket_(std::move(socket)),
        peer_(std::move(peer)),
        read_timer_(socket_.get_executor()),
        write_timer_(socket_.get_executor()),
        parser_({.max_message_bytes = server.options_.max_message_bytes,
                 .max_recipients = server.options_.max_recipients}) {
    asio::error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
  }

  awaitable<void> Run();
  // Wakes a session waiting for input, so that it sees the server stopping.
  void Wake() { read_timer_.cancel(); }

 private:
  // Sends the queued replies. False if the connection is gone.
  awaitable<bool> Flush();
  // False when the connection must close.
  awaitable<bool> Handle(LmtpEvent& event);
  awaitable<void> Deliver(LmtpEvent& event);
  void Queue(const LmtpReply& reply) { out_ += FormatReply(reply); }

  Impl& server_;
  tcp::socket socket_;
  const std::string peer_;
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
  LmtpParser parser_;
  std::string out_;  // replies not yet sent
  std::array<char, 64 << 10> buf_;
};

awaitable<bool> LmtpServer::Impl::Session::Flush() {
  if (out_.empty()) co_return true;
  // Replies are a few dozen bytes: a non-blocking send nearly always takes
  // them whole, sparing the timer and the parallel group of an awaited
  // write with a deadline (several per message otherwise).
  asio::error_code ec;
  socket_.non_blocking(true, ec);
  const size_t sent = ec ? 0 : socket_.write_some(asio::buffer(out_), ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
    out_.clear();
    co_return false;
  }
  out_.erase(0, sent);
  if (out_.empty()) co_return true;
  write_timer_.expires_after(ToChrono(server_.options_.idle_timeout));
  asio::error_code timer_ec;  // a cancelled wait must not throw
  ec.clear();
  auto result = co_await (
      asio::async_write(socket_, asio::buffer(out_), asio::redirect_error(use_awaitable, ec)) ||
      write_timer_.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
  out_.clear();
  co_return result.index() == 0 && !ec;
}

awaitable<void> LmtpServer::Impl::Session::Deliver(LmtpEvent& event) {
  std::string stored;
  stored.reserve(event.from.size() + 17 + event.message.size());
  absl::StrAppend(&stored, "Return-Path: <", event.from, ">\r\n");
  stored.append(event.message);
  std::string().swap(event.message);
  ++server_.stats_.messages;
  std::vector<LmtpReply> replies;
  try {
    // A named awaitable: no temporaries in the co_await expression (GCC bug 99576).
    awaitable<std::vector<LmtpReply>> delivery =
        server_.backend_.Deliver(event.from, event.recipients, std::move(stored));
    replies = co_await std::move(delivery);
  } catch (const std::exception& e) {
    LogLine(Severity::kError, "lmtp delivery failed", Kv("peer", peer_) + Kv("error", e.what()));
    replies.clear();
  }
  // One reply per recipient, whatever the backend did.
  replies.resize(event.recipients.size(), LmtpReply{451, "4.3.0", "internal error, try again"});
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].positive()) {
      ++server_.stats_.recipients_delivered;
    } else {
      ++server_.stats_.recipients_refused;
      LogLine(replies[i].code < 500 ? Severity::kWarning : Severity::kInfo, "lmtp delivery refused",
              Kv("peer", peer_) + Kv("rcpt", event.recipients[i]) +
                  Kv("reply", FormatReply(replies[i]).substr(0, 200)));
    }
    Queue(replies[i]);
  }
}

awaitable<bool> LmtpServer::Impl::Session::Handle(LmtpEvent& event) {
  switch (event.kind) {
    case LmtpEvent::kReply:
      if (event.reply.code == 552 && event.reply.enhanced == "5.3.4") {
        ++server_.stats_.recipients_refused;
      }
      Queue(event.reply);
      co_return true;
    case LmtpEvent::kLhlo:
      out_ += FormatLhloReply(server_.options_.hostname, server_.options_.max_message_bytes);
      co_return true;
    case LmtpEvent::kCheckRecipient: {
      LmtpReply reply = server_.backend_.CheckRecipient(event.address);
      if (reply.positive()) parser_.AcceptRecipient(event.address);
      Queue(reply);
      co_return true;
    }
    case LmtpEvent::kDeliver:
      // The client waits for these replies: send what is queued first.
      if (!co_await Flush()) co_return false;
      co_await Deliver(event);
      co_return true;
    case LmtpEvent::kQuit:
      Queue(event.reply);
      co_await Flush();
      co_return false;
  }
  co_return false;
}

awaitable<void> LmtpServer::Impl::Session::Run() {
  Queue({220, "", absl::StrCat(server_.options_.hostname, " LMTP ready")});
  bool open = co_await Flush();
  while (open) {
    LmtpEvent event;
    while (open && parser_.Next(&event)) open = co_await Handle(event);
    if (!open || !co_await Flush()) break;
    if (server_.listener_.stopping()) {
      Queue({421, "4.3.2", "shutting down, try again later"});
      co_await Flush();
      break;
    }
    read_timer_.expires_after(ToChrono(server_.options_.idle_timeout));
    asio::error_code read_ec, timer_ec;
    auto result = co_await (
        socket_.async_read_some(asio::buffer(buf_), asio::redirect_error(use_awaitable, read_ec)) ||
        read_timer_.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
    if (result.index() == 1) {
      if (server_.listener_.stopping()) continue;  // the 421 above
      ++server_.stats_.idle_timeouts;
      Queue({421, "4.4.2", "idle timeout, closing the connection"});
      co_await Flush();
      break;
    }
    if (read_ec) break;  // closed by the peer
    parser_.Feed(std::string_view(buf_.data(), std::get<0>(result)));
  }
  asio::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

LmtpServer::Impl::Impl(asio::io_context& io, LmtpBackend& backend, LmtpServerOptions options)
    : backend_(backend),
      options_(std::move(options)),
      listener_(io,
                {.name = "lmtp",
                 .listen = options_.listen,
                 .free_bind = options_.free_bind,
                 .max_connections = options_.max_connections,
                 .refuse =
                     [](tcp::socket& socket) {
                       const std::string busy =
                           FormatReply({421, "4.3.2", "too many connections, try again later"});
                       asio::error_code ec;
                       socket.write_some(asio::buffer(busy), ec);  // non-blocking: best effort
                     }},
                [this](tcp::socket socket, std::string peer) {
                  return std::make_shared<Session>(*this, std::move(socket), std::move(peer));
                },
                [](std::shared_ptr<Session> session) -> awaitable<void> {
                  co_await session->Run();
                }) {}

LmtpServer::LmtpServer(asio::io_context& io, LmtpBackend& backend, LmtpServerOptions options)
    : impl_(std::make_unique<Impl>(io, backend, std::move(options))) {}
LmtpServer::~LmtpServer() = default;
absl::Status LmtpServer::Listen() { return impl_->listener_.Listen(); }
uint16_t LmtpServer::port() const { return impl_->listener_.port(); }
awaitable<void> LmtpServer::Run() { return impl_->listener_.Run(); }
void LmtpServer::Stop() {
  impl_->listener_.Stop([](Impl::Session& session) { session.Wake(); });
}
LmtpServerStats LmtpServer::stats() const {
  LmtpServerStats s = impl_->stats_;
  const transport::ServerStats& st = impl_->listener_.stats();
  s.connections_accepted = st.accepted;
  s.connections_open = st.open;
  s.connections_refused = st.refused;
  s.accept_errors = st.accept_errors;
  s.session_failures = st.session_failures;
  return s;
}

}  // namespace mailrepl::lmtp
