#include "transport/framed_connection.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/experimental/awaitable_operators.hpp"

namespace mailrepl::transport {

using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {
std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}
}  // namespace

template <typename Frame>
BasicFramedConnection<Frame>::BasicFramedConnection(asio::ip::tcp::socket socket,
                                   std::string peer)
    : socket_(std::move(socket)),
      peer_(std::move(peer)),
      wake_writer_(socket_.get_executor()),
      flushed_(socket_.get_executor()) {
  wake_writer_.expires_at(std::chrono::steady_clock::time_point::max());
  flushed_.expires_at(std::chrono::steady_clock::time_point::max());
  asio::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
}

template <typename Frame>
void BasicFramedConnection<Frame>::Start() {
  asio::co_spawn(
      socket_.get_executor(),
      [self = this->shared_from_this()]() { return self->Writer(); }, asio::detached);
}

template <typename Frame>
void BasicFramedConnection<Frame>::Send(const Frame& frame) {
  if (closed_) return;
  std::string wire;
  absl::Status encoded = EncodeFrame(frame.SerializeAsString(), compress_, &wire);
  if (!encoded.ok()) {
    // A frame that cannot be sent must not vanish silently: the peer would
    // wait for it. Fail the connection; Flush() and Read() report why.
    write_error_ = absl::InternalError(
        absl::StrCat("cannot send to ", peer_, ": ", encoded.message()));
    Close();
    return;
  }
  queued_bytes_ += wire.size();
  queue_.push_back(std::move(wire));
  wake_writer_.cancel_one();
}

template <typename Frame>
awaitable<void> BasicFramedConnection<Frame>::Writer() {
  while (!closed_) {
    if (queue_.empty()) {
      asio::error_code ec;
      co_await wake_writer_.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    // Coalesce queued frames into one write.
    std::string batch;
    while (!queue_.empty() && batch.size() < (1u << 20)) {
      batch.append(queue_.front());
      queue_.pop_front();
    }
    asio::error_code ec;
    co_await asio::async_write(socket_, asio::buffer(batch),
                               asio::redirect_error(use_awaitable, ec));
    queued_bytes_ -= batch.size();
    if (ec) {
      write_error_ = absl::UnavailableError(
          absl::StrCat("write to ", peer_, " failed: ", ec.message()));
      Close();
      break;
    }
    bytes_sent_ += batch.size();
    if (queue_.empty()) flushed_.cancel();
  }
  flushed_.cancel();
}

template <typename Frame>
awaitable<absl::Status> BasicFramedConnection<Frame>::Flush(absl::Duration timeout) {
  asio::steady_timer deadline(socket_.get_executor(), ToChrono(timeout));
  while (queued_bytes_ > 0 && !closed_) {
    asio::error_code ec, timer_ec;  // a cancelled wait must not throw
    auto result = co_await (
        flushed_.async_wait(asio::redirect_error(use_awaitable, ec)) ||
        deadline.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
    if (result.index() == 1) {
      co_return absl::DeadlineExceededError(
          absl::StrCat("sending to ", peer_, " timed out"));
    }
  }
  if (!write_error_.ok()) co_return write_error_;
  co_return absl::OkStatus();
}

template <typename Frame>
std::optional<absl::StatusOr<Frame>> BasicFramedConnection<Frame>::DecodeBuffered() {
  DecodedFrame frame;
  std::string error;
  switch (reader_.Next(&frame, &error)) {
    case FrameResult::kGood: {
      Frame parsed;
      if (!parsed.ParseFromString(frame.payload)) {
        return absl::InvalidArgumentError(absl::StrCat("unparsable frame from ", peer_));
      }
      if (parsed.body_case() == Frame::BODY_NOT_SET) {
        return absl::InvalidArgumentError(
            absl::StrCat("frame of an unknown message type from ", peer_));
      }
      return parsed;
    }
    case FrameResult::kBad:
      return absl::InvalidArgumentError(absl::StrCat("bad frame from ", peer_, ": ", error));
    case FrameResult::kNeedMore:
      break;
  }
  return std::nullopt;
}

template <typename Frame>
std::optional<absl::StatusOr<Frame>> BasicFramedConnection<Frame>::TryRead() {
  if (auto f = DecodeBuffered()) return f;
  // Take what the socket already holds, without waiting (bounded).
  asio::error_code ec;
  size_t taken = 0;
  std::string buf;
  while (!closed_ && taken < (16u << 20)) {
    size_t avail = socket_.available(ec);
    if (ec || avail == 0) break;
    buf.resize(std::min<size_t>(avail, 1 << 20));
    size_t n = socket_.read_some(asio::buffer(buf), ec);
    if (ec || n == 0) break;
    bytes_received_ += n;
    taken += n;
    reader_.Feed(absl::string_view(buf.data(), n));
    if (auto f = DecodeBuffered()) return f;
  }
  return std::nullopt;
}

template <typename Frame>
awaitable<absl::StatusOr<Frame>> BasicFramedConnection<Frame>::Read(
    absl::Duration timeout) {
  asio::steady_timer deadline(socket_.get_executor(), ToChrono(timeout));
  char buf[1 << 16];
  for (;;) {
    if (auto f = DecodeBuffered()) co_return std::move(*f);
    if (!write_error_.ok()) co_return write_error_;  // why it was closed
    if (closed_)
      co_return absl::UnavailableError(
          absl::StrCat("connection to ", peer_, " closed"));
    // Both branches redirect their errors: the losing one is cancelled, and
    // a throw there costs an exception unwind per frame read.
    asio::error_code ec, timer_ec;
    auto result = co_await (
        socket_.async_read_some(asio::buffer(buf),
                                asio::redirect_error(use_awaitable, ec)) ||
        deadline.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
    if (result.index() == 1) {
      co_return absl::DeadlineExceededError(absl::StrCat(
          "nothing from ", peer_, " for ", absl::FormatDuration(timeout)));
    }
    if (ec) {
      if (!write_error_.ok()) co_return write_error_;
      co_return absl::UnavailableError(
          absl::StrCat("connection to ", peer_, " closed: ", ec.message()));
    }
    size_t n = std::get<0>(result);
    bytes_received_ += n;
    reader_.Feed(absl::string_view(buf, n));
  }
}

template <typename Frame>
void BasicFramedConnection<Frame>::Close() {
  if (closed_) return;
  closed_ = true;
  asio::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  wake_writer_.cancel();
  flushed_.cancel();
}

template class BasicFramedConnection<syncpb::Frame>;
template class BasicFramedConnection<rpcpb::Frame>;

}  // namespace mailrepl::transport
