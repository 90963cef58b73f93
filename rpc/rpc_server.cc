#include "rpc/rpc_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
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
    : options_(std::move(options)),
      handler_(std::move(handler)),
      server_(io,
              {.name = absl::StrCat("rpc ", options_.service),
               .listen = options_.listen,
               .free_bind = options_.free_bind,
               .max_connections = options_.max_connections},
              [](asio::ip::tcp::socket socket, std::string peer) {
                auto conn = std::make_shared<Conn>(std::move(socket), std::move(peer));
                conn->Start();
                return conn;
              },
              [this](std::shared_ptr<Conn> conn) { return Session(std::move(conn)); }) {}

RpcServer::~RpcServer() = default;

absl::Status RpcServer::Listen() { return server_.Listen(); }

uint16_t RpcServer::port() const { return server_.port(); }

awaitable<void> RpcServer::Run() { return server_.Run(); }

void RpcServer::Stop() {
  server_.Stop([](Conn& conn) { conn.Close(); });
}

RpcServerStats RpcServer::stats() const {
  RpcServerStats s = stats_;
  s.connections = server_.stats().accepted;
  s.accept_errors = server_.stats().accept_errors;
  s.session_failures = server_.stats().session_failures;
  return s;
}

awaitable<absl::Status> RpcServer::Login(Conn& conn, RpcPeer* peer) {
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

awaitable<void> RpcServer::Session(std::shared_ptr<Conn> conn) {
  try {
    co_await Serve(conn);
  } catch (...) {
    conn->Close();  // ends its writer; the server logs the exception
    throw;
  }
}

awaitable<void> RpcServer::Serve(std::shared_ptr<Conn> conn) {
  RpcPeer peer{conn->peer(), ""};
  absl::Status status = co_await Login(*conn, &peer);
  while (status.ok() && !server_.stopping()) {
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
    const absl::Status flushed = co_await conn->Flush(absl::Seconds(1));
    (void)flushed;  // closing either way
  }
  conn->Close();
}

}  // namespace mailrepl::rpc
