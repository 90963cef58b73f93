#include "rpc/rpc_client.h"

#include <utility>

#include "asio/experimental/awaitable_operators.hpp"
#include "transport/net.h"
#include "rpc/rpc_server.h"
#include "transport/auth.h"

namespace mailrepl::rpc {

using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

absl::Duration Remaining(absl::Time deadline) {
  return std::max(absl::ZeroDuration(), deadline - absl::Now());
}

// A connection-level error from the server (Reply with id 0) as a status.
absl::Status ServerError(const rpcpb::Reply& reply, const std::string& address) {
  const auto code = static_cast<absl::StatusCode>(reply.code());
  return absl::Status(code == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : code,
                      absl::StrCat(address, ": ", reply.message()));
}

}  // namespace

RpcClient::RpcClient(asio::io_context& io, RpcClientOptions options)
    : io_(io), options_(std::move(options)) {}

RpcClient::~RpcClient() { Close(); }

void RpcClient::Close() {
  if (conn_) conn_->Close();
  conn_.reset();
}

bool RpcClient::connected() const { return conn_ && !conn_->closed(); }

awaitable<absl::Status> RpcClient::Connect(absl::Time deadline) {
  absl::StatusOr<asio::ip::tcp::endpoint> endpoint = transport::ParseEndpoint(options_.address);
  if (!endpoint.ok()) co_return endpoint.status();
  asio::ip::tcp::socket socket(io_);
  asio::steady_timer timer(io_, absl::ToChronoNanoseconds(
                                    std::min(Remaining(deadline), options_.connect_timeout)));
  asio::error_code ec, timer_ec;  // a cancelled wait must not throw
  auto connected = co_await (
      socket.async_connect(*endpoint, asio::redirect_error(use_awaitable, ec)) ||
      timer.async_wait(asio::redirect_error(use_awaitable, timer_ec)));
  if (connected.index() == 1) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("connecting to ", options_.service, " at ", options_.address, " timed out"));
  }
  if (ec) {
    co_return absl::UnavailableError(absl::StrCat("cannot connect to ", options_.service, " at ",
                                                  options_.address, ": ", ec.message()));
  }
  auto conn = std::make_shared<transport::RpcConnection>(std::move(socket), options_.address);
  conn->Start();
  absl::Status status = co_await Login(*conn, deadline);
  if (!status.ok()) {
    conn->Close();  // ends its writer coroutine too
    co_return status;
  }
  conn_ = std::move(conn);
  co_return absl::OkStatus();
}

awaitable<absl::Status> RpcClient::Login(transport::RpcConnection& connection, absl::Time deadline) {
  transport::RpcConnection* conn = &connection;

  absl::StatusOr<rpcpb::Frame> hello = co_await conn->Read(Remaining(deadline));
  if (!hello.ok()) co_return hello.status();
  if (hello->has_reply()) co_return ServerError(hello->reply(), options_.address);
  if (!hello->has_hello() || hello->hello().challenge().size() != transport::kChallengeSize) {
    co_return absl::InvalidArgumentError(
        absl::StrCat(options_.address, " did not greet as a ", options_.service, " server"));
  }
  if (hello->hello().service() != options_.service) {
    co_return absl::InvalidArgumentError(absl::StrCat(
        options_.address, " serves '", hello->hello().service(), "', not '", options_.service,
        "': check the address"));
  }
  const std::string challenge = transport::NewChallenge();
  rpcpb::Frame login;
  rpcpb::Login* l = login.mutable_login();
  l->set_version_major(kRpcVersionMajor);
  l->set_version_minor(kRpcVersionMinor);
  l->set_service(options_.service);
  l->set_client(options_.client);
  l->set_challenge(challenge);
  l->set_response(transport::AuthResponse(options_.secret, transport::kClientRole, options_.service,
                                     hello->hello().challenge(), challenge));
  conn->Send(login);

  absl::StatusOr<rpcpb::Frame> welcome = co_await conn->Read(Remaining(deadline));
  if (!welcome.ok()) co_return welcome.status();
  if (welcome->has_reply()) co_return ServerError(welcome->reply(), options_.address);
  if (!welcome->has_welcome() ||
      !transport::ResponsesEqual(welcome->welcome().response(),
                            transport::AuthResponse(options_.secret, transport::kServerRole,
                                               options_.service, challenge,
                                               hello->hello().challenge()))) {
    co_return absl::UnauthenticatedError(absl::StrCat(
        options_.address, " failed authentication: check that both sides use the same secret"));
  }
  co_return absl::OkStatus();
}

awaitable<absl::StatusOr<std::string>> RpcClient::CallRaw(std::string request,
                                                           absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (!connected()) {
    Close();
    absl::Status connected_now = co_await Connect(deadline);
    if (!connected_now.ok()) co_return connected_now;
  }
  const uint64_t id = next_id_++;
  rpcpb::Frame call;
  call.mutable_call()->set_id(id);
  call.mutable_call()->set_request(std::move(request));
  // Held for the whole call: Close() (from another coroutine, say at
  // shutdown) drops conn_ while this one still waits on the connection.
  const std::shared_ptr<transport::RpcConnection> conn = conn_;
  conn->Send(call);
  absl::StatusOr<rpcpb::Frame> reply = co_await conn->Read(Remaining(deadline));
  if (!reply.ok()) {
    Close();  // the answer may still come: never read it as the next call's
    co_return reply.status();
  }
  if (!reply->has_reply() || (reply->reply().id() != id && reply->reply().id() != 0)) {
    Close();
    co_return absl::InvalidArgumentError(
        absl::StrCat(options_.address, " sent an unexpected frame instead of a reply"));
  }
  if (reply->reply().id() == 0) {
    Close();
    co_return ServerError(reply->reply(), options_.address);
  }
  if (reply->reply().code() != 0) {
    co_return absl::Status(static_cast<absl::StatusCode>(reply->reply().code()),
                           reply->reply().message());
  }
  co_return std::move(*reply->mutable_reply()->mutable_response());
}

absl::StatusOr<std::string> CallOnce(const RpcClientOptions& options, const std::string& request,
                                     absl::Duration timeout) {
  asio::io_context io;
  RpcClient client(io, options);
  absl::StatusOr<std::string> result = absl::UnknownError("call did not finish");
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        result = co_await client.CallRaw(request, timeout);
        client.Close();
      },
      asio::detached);
  io.run();
  return result;
}

}  // namespace mailrepl::rpc
