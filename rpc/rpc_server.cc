#include "rpc/rpc_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "transport/net.h"
#include "transport/auth.h"

namespace mailrepl::rpc {

using asio::awaitable;
using asio::use_awaitable;

namespace {

rpcpb::Frame ReplyFrame(uint64_t id, const absl::Status& status, std::string response = {}) {
  rpcpb::Frame f;
  rpcpb::Reply* r = f.mutable_reply();
  r->set_id(id);
  r->set_code(static_cast<int>(status.code()));
  r->set_message(std::string(status.message()));
  if (status.ok()) r->set_response(std::move(response));
  return f;
}

}  // namespace

RpcServer::RpcServer(asio::io_context& io, RpcServerOptions options, RpcHandler handler)
    : io_(io), options_(std::move(options)), handler_(std::move(handler)), acceptor_(io) {}

RpcServer::~RpcServer() = default;

absl::Status RpcServer::Listen() {
  return transport::ListenOn(acceptor_, options_.listen, options_.free_bind);
}

uint16_t RpcServer::port() const {
  asio::error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void RpcServer::Stop() {
  stopping_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  for (const auto& s : sessions_) s->Close();
}

awaitable<void> RpcServer::Run() {
  while (!stopping_) {
    asio::error_code ec;
    asio::ip::tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (stopping_) break;
    if (ec) {
      // Out of descriptors, say: back off instead of spinning.
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    std::string peer = transport::PeerAddress(socket);
    auto conn = std::make_shared<transport::RpcConnection>(std::move(socket), std::move(peer));
    conn->Start();
    sessions_.insert(conn);
    ++stats_.connections;
    asio::co_spawn(io_, Session(conn), asio::detached);
  }
}

awaitable<absl::Status> RpcServer::Login(transport::RpcConnection& conn, RpcPeer* peer) {
  const std::string challenge = transport::NewChallenge();
  rpcpb::Frame hello;
  hello.mutable_hello()->set_version_major(kRpcVersionMajor);
  hello.mutable_hello()->set_version_minor(kRpcVersionMinor);
  hello.mutable_hello()->set_service(options_.service);
  hello.mutable_hello()->set_challenge(challenge);
  conn.Send(hello);

  absl::StatusOr<rpcpb::Frame> f = co_await conn.Read(options_.login_timeout);
  if (!f.ok()) {
    if (absl::IsInvalidArgument(f.status())) ++stats_.bad_frames;
    co_return f.status();
  }
  if (!f->has_login()) {
    ++stats_.bad_frames;
    co_return absl::InvalidArgumentError("expected a login frame first");
  }
  const rpcpb::Login& login = f->login();
  if (login.version_major() != kRpcVersionMajor) {
    co_return absl::FailedPreconditionError(
        absl::StrCat("protocol version ", login.version_major(), ".", login.version_minor(),
                     " is not supported; this server speaks ", kRpcVersionMajor, ".",
                     kRpcVersionMinor));
  }
  if (login.service() != options_.service) {
    co_return absl::InvalidArgumentError(absl::StrCat(
        "this port serves '", options_.service, "', not '", login.service(), "'"));
  }
  if (login.challenge().size() != transport::kChallengeSize ||
      !transport::ResponsesEqual(login.response(),
                            transport::AuthResponse(options_.secret, transport::kClientRole,
                                               options_.service, challenge,
                                               login.challenge()))) {
    ++stats_.auth_failures;
    co_return absl::UnauthenticatedError(
        "authentication failed: check that both sides use the same secret file");
  }
  peer->client = login.client();
  rpcpb::Frame welcome;
  welcome.mutable_welcome()->set_response(transport::AuthResponse(
      options_.secret, transport::kServerRole, options_.service, login.challenge(), challenge));
  conn.Send(welcome);
  co_return absl::OkStatus();
}

awaitable<void> RpcServer::Session(std::shared_ptr<transport::RpcConnection> conn) {
  RpcPeer peer{conn->peer(), ""};
  absl::Status status = co_await Login(*conn, &peer);
  while (status.ok() && !stopping_) {
    absl::StatusOr<rpcpb::Frame> f = co_await conn->Read(options_.idle_timeout);
    if (!f.ok()) {
      if (absl::IsInvalidArgument(f.status())) ++stats_.bad_frames;
      status = f.status();
      break;
    }
    if (!f->has_call()) {
      ++stats_.bad_frames;
      status = absl::InvalidArgumentError("expected a call frame");
      break;
    }
    ++stats_.calls;
    const uint64_t id = f->call().id();
    absl::StatusOr<std::string> response =
        co_await handler_(std::move(*f->mutable_call()->mutable_request()), peer);
    if (!response.ok()) ++stats_.errors;
    conn->Send(response.ok() ? ReplyFrame(id, absl::OkStatus(), std::move(*response))
                             : ReplyFrame(id, response.status()));
  }
  if (!status.ok() && !absl::IsUnavailable(status) && !conn->closed()) {
    // Tell the client why, then close (connection-level error: id 0).
    LogLine(Severity::kWarning, "rpc connection closed",
            absl::StrCat(Kv("service", options_.service), Kv("peer", peer.address),
                         Kv("client", peer.client), Kv("reason", status.message())));
    conn->Send(ReplyFrame(0, status));
    co_await conn->Flush(absl::Seconds(1));
  }
  conn->Close();
  sessions_.erase(conn);
}

}  // namespace mailrepl::rpc
