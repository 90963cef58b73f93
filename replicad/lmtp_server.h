// File: replicad/lmtp_server.h
//
// The LMTP delivery front end (RFC 2033) of one master slot: accepts TCP
// connections, speaks the protocol through LmtpParser (PIPELINING,
// ENHANCEDSTATUSCODES, SIZE, 8BITMIME) and hands recipients and messages to
// an LmtpBackend. Each connection is one coroutine on the io_context; a
// delivery suspends only its own connection while the backend works, so
// deliveries of different connections run concurrently (and share fsyncs in
// the slot's group commit). Every stored message is "Return-Path: <from>\r\n"
// followed by the data after dot-unstuffing, each line ending in CRLF (a
// bare LF received becomes CRLF); its GUID is the SHA-1 of those bytes.
//
// Stop() stops accepting and closes idle connections with 421; a delivery in
// flight finishes and its replies are sent before its connection closes. A
// connection waiting for more of a message is closed with 421 as well: the
// client retries later and nothing was acknowledged.
//
// Thread-compatible: construct, Listen(), Run() and Stop() on the thread that
// runs the io_context (Stop() may also be posted to it).
//
// Example:
//   asio::io_context io;
//   SlotBackend backend(slot, {});
//   LmtpServer server(io, backend, {.listen = "127.0.0.1:24"});
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), LogExceptions("lmtp server"));
//   io.run();
#ifndef MAILREPL_REPLICAD_LMTP_SERVER_H_
#define MAILREPL_REPLICAD_LMTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio/awaitable.hpp"
#include "replicad/lmtp_backend.h"

namespace asio {
class io_context;
}  // namespace asio

namespace mailrepl::lmtp {

struct LmtpServerOptions {
  std::string listen = "127.0.0.1:24";  // ADDR:PORT, IPv4 or [IPv6]; port 0: any free port
  bool free_bind = false;  // IP_FREEBIND: bind an address not configured yet
  std::string hostname = "localhost";   // in the greeting and the LHLO reply
  uint64_t max_message_bytes = 50ull << 20;  // after unstuffing and CRLF, before Return-Path
  absl::Duration idle_timeout = absl::Minutes(5);  // per command, and per read of a message
  size_t max_recipients = 1000;
  // Connections beyond this get "421 4.3.2" and are closed at once
  // (transport::Server's refuse).
  size_t max_connections = 1000;
};

// Counters since construction.
struct LmtpServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t messages = 0;              // complete messages handed to the backend
  uint64_t recipients_delivered = 0;  // 2xx replies after DATA
  uint64_t recipients_refused = 0;    // 4xx/5xx replies after DATA (oversized included)
  uint64_t idle_timeouts = 0;
  uint64_t connections_refused = 0;  // over max_connections
  uint64_t accept_errors = 0;        // failed accepts (out of descriptors...)
  uint64_t session_failures = 0;     // connections ended by an exception (logged)
};

class LmtpServer {
 public:
  // io and backend must outlive the server.
  LmtpServer(asio::io_context& io, LmtpBackend& backend, LmtpServerOptions options);
  ~LmtpServer();
  LmtpServer(const LmtpServer&) = delete;
  LmtpServer& operator=(const LmtpServer&) = delete;

  // Binds the listening socket. kInvalidArgument for a bad address,
  // kUnavailable when it cannot bind.
  absl::Status Listen();
  // The bound port (after Listen), useful with port 0.
  uint16_t port() const;
  // Accepts connections until Stop(), then returns once every connection
  // has ended (at once, with a log line, if Listen() did not succeed).
  asio::awaitable<void> Run();
  // Stops accepting and winds the connections down (see the file comment).
  void Stop();
  LmtpServerStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailrepl::lmtp

#endif  // MAILREPL_REPLICAD_LMTP_SERVER_H_
