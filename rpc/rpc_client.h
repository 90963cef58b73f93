// File: rpc/rpc_client.h
//
// The client side of a request/response service: one authenticated
// connection to a server, opened on the first Call() and again after any
// failure (a call never retries by itself: the caller decides whether the
// request is safe to repeat). Calls are sequential: do not start a second
// Call() before the first returned (use a second client for a long poll).
//
// Thread-compatible: use from coroutines on one io_context thread.
//
// Example:
//   RpcClient client(io, {.address = "127.0.0.1:7000", .service =
//                         "coordinator", .secret = secret, .client = "replctl"});
//   ASSIGN_OR_RETURN(coordpb::Response r,
//                    co_await client.Call<coordpb::Response>(request, absl::Seconds(5)));
//
// For a tool's single call without an io_context of its own: CallOnce().
#ifndef MAILREPL_RPC_RPC_CLIENT_H_
#define MAILREPL_RPC_RPC_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "transport/framed_connection.h"

namespace mailrepl::rpc {

struct RpcClientOptions {
  std::string address;  // ADDR:PORT
  std::string service;
  std::string secret;
  std::string client;   // our name, for the server's logs
  absl::Duration connect_timeout = absl::Seconds(3);
};

class RpcClient {
 public:
  RpcClient(asio::io_context& io, RpcClientOptions options);
  ~RpcClient();
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  // Sends request bytes, returns the response bytes or the server's error
  // (same code and message). kUnavailable / kDeadlineExceeded when the
  // server cannot be reached or did not answer within timeout (which
  // covers connecting and logging in); the connection is then closed.
  asio::awaitable<absl::StatusOr<std::string>> CallRaw(std::string request,
                                                        absl::Duration timeout);

  // Typed: serializes the request, parses the response as Response.
  template <typename Response, typename Request>
  asio::awaitable<absl::StatusOr<Response>> Call(const Request& request,
                                                 absl::Duration timeout) {
    absl::StatusOr<std::string> bytes = co_await CallRaw(request.SerializeAsString(), timeout);
    if (!bytes.ok()) co_return bytes.status();
    Response response;
    if (!response.ParseFromString(*bytes)) {
      co_return absl::DataLossError(
          absl::StrCat("unparsable response from ", options_.address));
    }
    co_return response;
  }

  void Close();
  bool connected() const;
  const std::string& address() const { return options_.address; }

 private:
  asio::awaitable<absl::Status> Connect(absl::Time deadline);
  asio::awaitable<absl::Status> Login(transport::RpcConnection& conn, absl::Time deadline);

  asio::io_context& io_;
  RpcClientOptions options_;
  std::shared_ptr<transport::RpcConnection> conn_;
  uint64_t next_id_ = 1;
};

// One call on a fresh io_context and connection (for command-line tools).
absl::StatusOr<std::string> CallOnce(const RpcClientOptions& options, const std::string& request,
                                     absl::Duration timeout);

template <typename Response, typename Request>
absl::StatusOr<Response> CallOnce(const RpcClientOptions& options, const Request& request,
                                  absl::Duration timeout) {
  absl::StatusOr<std::string> bytes = CallOnce(options, request.SerializeAsString(), timeout);
  if (!bytes.ok()) return bytes.status();
  Response response;
  if (!response.ParseFromString(*bytes)) {
    return absl::DataLossError(absl::StrCat("unparsable response from ", options.address));
  }
  return response;
}

}  // namespace mailrepl::rpc

#endif  // MAILREPL_RPC_RPC_CLIENT_H_
