// One TCP connection carrying protocol frames (docs/protocol.md "Framing"):
// a reader that returns whole, checked, parsed frames with a deadline, and a
// writer coroutine that sends queued frames in order (Asio's chat_server
// shape). Frame is the protobuf message every frame holds (a `oneof body`):
// Frame for the replication stream, rpcpb::Frame for the
// request/response services (rpc/). Both are instantiated in the .cc.
// Thread-compatible: use from coroutines on one io_context thread.
#ifndef MAILREPL_TRANSPORT_FRAMED_CONNECTION_H_
#define MAILREPL_TRANSPORT_FRAMED_CONNECTION_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "transport/net.h"
#include "proto/rpc.pb.h"
#include "proto/sync.pb.h"
#include "transport/frame_codec.h"

namespace mailrepl::transport {


template <typename Frame>
class BasicFramedConnection : public std::enable_shared_from_this<BasicFramedConnection<Frame>> {
 public:
  BasicFramedConnection(asio::ip::tcp::socket socket, std::string peer);
  BasicFramedConnection(const BasicFramedConnection&) = delete;
  BasicFramedConnection& operator=(const BasicFramedConnection&) = delete;

  // Starts the writer coroutine. Call once, before Send().
  void Start();

  // The next frame. kDeadlineExceeded when nothing arrived within timeout,
  // kUnavailable when the peer closed, kInvalidArgument for a bad frame
  // (garbage, oversized, bad checksum, unparsable, unknown message type).
  asio::awaitable<absl::StatusOr<Frame>> Read(absl::Duration timeout);

  // A frame that has already arrived (buffered, or waiting in the socket),
  // without waiting; nullopt if none is complete yet.
  std::optional<absl::StatusOr<Frame>> TryRead();

  // Queues a frame for sending.
  void Send(const Frame& frame);
  // Waits until every queued frame has been written (or the connection failed).
  asio::awaitable<absl::Status> Flush(absl::Duration timeout);

  // From now on, compress outgoing frames / accept compressed ones.
  void EnableCompression() {
    compress_ = true;
    reader_.set_allow_compressed(true);
  }
  void Close();
  bool closed() const { return closed_; }

  const std::string& peer() const { return peer_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }
  size_t queued_bytes() const { return queued_bytes_; }

 private:
  asio::awaitable<void> Writer();
  std::optional<absl::StatusOr<Frame>> DecodeBuffered();

  asio::ip::tcp::socket socket_;
  std::string peer_;
  FrameReader reader_{false};
  bool compress_ = false;
  bool closed_ = false;
  absl::Status write_error_;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  asio::steady_timer wake_writer_;
  asio::steady_timer flushed_;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

using FramedConnection = BasicFramedConnection<syncpb::Frame>;
using RpcConnection = BasicFramedConnection<rpcpb::Frame>;
extern template class BasicFramedConnection<syncpb::Frame>;
extern template class BasicFramedConnection<rpcpb::Frame>;

}  // namespace mailrepl::transport

#endif  // MAILREPL_TRANSPORT_FRAMED_CONNECTION_H_
