// File: replicad/metrics_server.h
//
// A minimal HTTP/1.1 server for Prometheus scrapes and health checks
// (docs/operations.md "Metrics"):
//   GET /metrics -> 200, text/plain; version=0.0.4, the text the metrics
//                   callback returns at scrape time (build it with
//                   MetricsBuilder, replicad/metrics_text.h)
//   GET /health  -> 200 with the health callback's text when ok, else 503
//   other paths  -> 404; another method on /metrics or /health -> 405
//   a request head over 8 KiB, or malformed -> 400
// Every response closes the connection (Connection: close). The whole
// request head must arrive within read_timeout, so a silent or slow client
// cannot hold a connection; connections over max_connections are closed
// at once (transport::Server with a silent refusal). A query string is ignored ("/metrics?x" is "/metrics").
//
// Thread-compatible: construct, Listen(), Run() and Stop() on the thread
// running the io_context; the callbacks run there too, once per request, so
// they must not block (read counters and cached state). Destroy the server
// only after Run() has returned: it does once Stop() was called and every
// connection has ended.
//
// Example:
//   MetricsServer server(io, {.listen = "127.0.0.1:9100"},
//                        [&] { return CollectMetrics().Text(); },
//                        [&] { return HealthReport{.ok = true, .text = "ok\n"}; });
//   RETURN_IF_ERROR(server.Listen());
//   asio::co_spawn(io, server.Run(), LogExceptions("metrics server"));
#ifndef MAILREPL_REPLICAD_METRICS_SERVER_H_
#define MAILREPL_REPLICAD_METRICS_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "transport/server.h"

namespace mailrepl::metrics {

// Longest request head (request line and headers) accepted.
inline constexpr size_t kMaxHttpRequestBytes = 8 * 1024;

struct MetricsServerOptions {
  std::string listen;  // ADDR:PORT; port 0 = any free port
  // The request head must arrive within this time after the connection opened.
  absl::Duration read_timeout = absl::Seconds(10);
  // Sending the response must end within this time.
  absl::Duration write_timeout = absl::Seconds(10);
  // Connections open at once; more are closed at once.
  size_t max_connections = 64;
};

struct HealthReport {
  bool ok = false;
  std::string text;  // the response body (end it with a newline)
};

using MetricsCallback = std::function<std::string()>;
using HealthCallback = std::function<HealthReport()>;

struct MetricsServerStats {
  uint64_t connections = 0;   // accepted
  uint64_t responses = 0;     // responses sent (any status)
  uint64_t scrapes = 0;       // 200 responses to GET /metrics
  uint64_t bad_requests = 0;  // 400 responses
  uint64_t timeouts = 0;      // closed because the request did not arrive in time
  uint64_t rejected = 0;      // closed at once: over max_connections
  uint64_t accept_errors = 0;  // failed accepts (out of descriptors...)
  uint64_t session_failures = 0;  // connections ended by an exception (logged)
};

class MetricsServer {
 public:
  MetricsServer(asio::io_context& io, MetricsServerOptions options, MetricsCallback metrics,
                HealthCallback health);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // kInvalidArgument for a bad address, kUnavailable when it cannot bind.
  absl::Status Listen();
  uint16_t port() const;  // after Listen()
  // Accepts connections until Stop(), then returns once every connection
  // has ended.
  asio::awaitable<void> Run();
  // Stops accepting and closes every open connection.
  void Stop();
  MetricsServerStats stats() const;

 private:
  struct Connection;
  struct Response;
  asio::awaitable<void> Session(std::shared_ptr<Connection> conn);
  Response Answer(const std::string& head);
  void Arm(const std::shared_ptr<Connection>& conn, absl::Duration timeout);

  MetricsServerOptions options_;
  MetricsCallback metrics_;
  HealthCallback health_;
  transport::Server<Connection> server_;
  MetricsServerStats stats_;  // the request counters; stats() adds the server's
};

}  // namespace mailrepl::metrics

#endif  // MAILREPL_REPLICAD_METRICS_SERVER_H_
