// The request/response transport (rpc/) over real loopback sockets: login
// with the shared secret, calls answered in order, errors carried with
// their code, and bad clients closed without harm to others.
#include <future>
#include <thread>

#include "asio.hpp"
#include "catch2/catch.hpp"
#include "proto/rpc.pb.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"

namespace mailrepl::rpc {
namespace {

constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";

// An echo service on its own io thread: "fail:..." answers with an error.
class EchoServer {
 public:
  EchoServer() {
    server_ = std::make_unique<RpcServer>(
        io_, RpcServerOptions{.listen = "127.0.0.1:0", .service = "echo", .secret = kSecret},
        [](std::string request, const RpcPeer& peer) -> asio::awaitable<absl::StatusOr<std::string>> {
          if (request.rfind("fail:", 0) == 0) co_return absl::NotFoundError(request.substr(5));
          co_return "echo:" + request + " from " + peer.client;
        });
    REQUIRE(server_->Listen().ok());
    asio::co_spawn(io_, server_->Run(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~EchoServer() {
    asio::post(io_, [this] { server_->Stop(); });
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  RpcServerStats stats() {
    std::promise<RpcServerStats> p;
    asio::post(io_, [&] { p.set_value(server_->stats()); });
    return p.get_future().get();
  }

 private:
  asio::io_context io_;
  std::unique_ptr<RpcServer> server_;
  std::thread thread_;
};

RpcClientOptions Options(const std::string& address, std::string secret = kSecret,
                         std::string service = "echo") {
  return {.address = address, .service = service, .secret = secret, .client = "tester"};
}

TEST_CASE("calls are answered in order on one authenticated connection", "[rpc]") {
  EchoServer server;
  asio::io_context io;
  RpcClient client(io, Options(server.address()));
  std::vector<absl::StatusOr<std::string>> results;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 3; ++i) {
          results.push_back(co_await client.CallRaw("m" + std::to_string(i), absl::Seconds(5)));
        }
        results.push_back(co_await client.CallRaw("fail:no such thing", absl::Seconds(5)));
        results.push_back(co_await client.CallRaw("after", absl::Seconds(5)));
        client.Close();
      },
      asio::detached);
  io.run();
  REQUIRE(results.size() == 5);
  CHECK(results[0].value() == "echo:m0 from tester");
  CHECK(results[2].value() == "echo:m2 from tester");
  CHECK(absl::IsNotFound(results[3].status()));
  CHECK(results[3].status().message() == "no such thing");
  CHECK(results[4].value() == "echo:after from tester");  // an error keeps the connection
  CHECK(server.stats().connections == 1);
}

TEST_CASE("a client with the wrong secret is refused and learns why", "[rpc]") {
  EchoServer server;
  auto r = CallOnce(Options(server.address(), "another secret of enough bytes"), "x",
                    absl::Seconds(5));
  REQUIRE(absl::IsUnauthenticated(r.status()));
  CHECK(std::string(r.status().message()).find("secret") != std::string::npos);
  CHECK(server.stats().auth_failures == 1);
  CHECK(CallOnce(Options(server.address()), "ok", absl::Seconds(5)).value() ==
        "echo:ok from tester");
}

TEST_CASE("a client asking for another service is refused", "[rpc]") {
  EchoServer server;
  auto r = CallOnce(Options(server.address(), kSecret, "coordinator"), "x", absl::Seconds(5));
  REQUIRE(!r.ok());
  CHECK(std::string(r.status().message()).find("'echo'") != std::string::npos);
}

TEST_CASE("garbage on the port closes that connection only", "[rpc]") {
  EchoServer server;
  {
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    auto ep = transport::ParseEndpoint(server.address());
    s.connect(*ep);
    const std::string garbage(100, '\xff');
    asio::write(s, asio::buffer(garbage));
    // The server closes the connection: reading reaches EOF.
    asio::error_code ec;
    char buf[4096];
    while (!ec) s.read_some(asio::buffer(buf), ec);
    CHECK(ec == asio::error::eof);
  }
  CHECK(server.stats().bad_frames == 1);
  CHECK(CallOnce(Options(server.address()), "still", absl::Seconds(5)).value() ==
        "echo:still from tester");
}

TEST_CASE("a call to an address where nothing listens fails as unavailable", "[rpc]") {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const std::string address = "127.0.0.1:" + std::to_string(a.local_endpoint().port());
  a.close();
  auto r = CallOnce(Options(address), "x", absl::Seconds(2));
  CHECK(absl::IsUnavailable(r.status()));
}

}  // namespace
}  // namespace mailrepl::rpc
