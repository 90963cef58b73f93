// The coordinator's Postfix socketmap (docs/protocol.md "Socketmap routing
// lookups"): the netstring codec; RoutingMaps and SocketmapServer
// in-process over real loopback sockets, on a Coordinator with a real
// SQLite file (the server on its own io thread, the test a blocking
// client, as Postfix is); and the real coordinatord with
// --socketmap-listen.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "coordinator/coordinator.h"
#include "coordinator/netstring.h"
#include "coordinator/routing_maps.h"
#include "coordinator/socketmap_server.h"
#include "proto/coord.pb.h"
#include "rpc/rpc_client.h"
#include "test/coord_requests.h"
#include "test/process_util.h"
#include "test/test_util.h"

namespace mailrepl::coord {
namespace {

using testing::Process;
using testing::TempDir;
using testing::WaitFor;

// --- the netstring codec ---

TEST_CASE("a netstring is parsed once complete and says how many bytes it took",
          "[socketmap][netstring]") {
  const std::string wire = "21:transport bob@example,3:abc,";
  NetstringParse p = ParseNetstring(wire, 100);
  REQUIRE(p.result == NetstringResult::kGood);
  CHECK(p.payload == "transport bob@example");
  CHECK(p.consumed == 25);
  p = ParseNetstring(absl::string_view(wire).substr(25), 100);
  REQUIRE(p.result == NetstringResult::kGood);
  CHECK(p.payload == "abc");
  // Every proper prefix needs more.
  for (size_t n = 0; n < 25; ++n) {
    INFO("prefix " << n);
    CHECK(ParseNetstring(wire.substr(0, n), 100).result == NetstringResult::kNeedMore);
  }
  CHECK(ParseNetstring("0:,", 100).payload.empty());
  CHECK(ParseNetstring("0:,", 100).consumed == 3);
  CHECK(ParseNetstring("003:abc,", 100).payload == "abc");
  CHECK(EncodeNetstring("OK lmtp:inet:10.0.0.1:24") == "24:OK lmtp:inet:10.0.0.1:24,");
  CHECK(EncodeNetstring("") == "0:,");
}

TEST_CASE("malformed and oversized netstrings are bad, said before the data arrives",
          "[socketmap][netstring]") {
  struct Case {
    std::string input;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {"hello", "not a netstring"},
           {":abc,", "not a netstring"},
           {"-1:", "not a netstring"},
           {"3 :abc,", "not a netstring"},
           {"3:abcd", "does not end with ','"},
           {"101:", "longer than 100 bytes"},
           {"101", "longer than 100 bytes"},
           {"99999999999999999999:", "longer than 100 bytes"},
       }) {
    INFO(c.input);
    const NetstringParse p = ParseNetstring(c.input, 100);
    REQUIRE(p.result == NetstringResult::kBad);
    CHECK(absl::StrContains(p.error, c.error));
  }
  // Ten digits are too many whatever the bound.
  CHECK(ParseNetstring("0000000001:a,", 1u << 30).result == NetstringResult::kBad);
}

// --- the maps ---

coordpb::CreateStore StoreWithService(std::vector<uint64_t> slot_ids, uint64_t store_id,
                                      const std::string& service_lmtp) {
  coordpb::CreateStore r = Store(std::move(slot_ids), store_id);
  r.set_service_lmtp(service_lmtp);
  return r;
}

// A Coordinator on a fresh file (h1: slots 1, 2; h2: 3, 4; h3: 5, 6; store
// 1 = slots 1, 3 with alice and bob; store 2 = slots 2, 5 with the service
// address 127.1.9.2:2424 and carol), its maps and a SocketmapServer on an
// io thread of its own. Everything that touches the Coordinator runs on
// that thread (OnIo), as in coordinatord.
class MapServer {
 public:
  explicit MapServer(SocketmapServerOptions options = {}) {
    auto c = Coordinator::Open(dir_.Sub("coord.db"),
                               {.cluster_id = "test", .lease_ms = 60000, .now_ms = [] {
                                  return int64_t{1'800'000'000'000};
                                }});
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    coordinator_ = std::move(c).value();
    Coordinator& co = *coordinator_;
    REQUIRE(co.RegisterHost(Host("h1", {1, 2})).ok());
    REQUIRE(co.RegisterHost(Host("h2", {3, 4})).ok());
    REQUIRE(co.RegisterHost(Host("h3", {5, 6})).ok());
    REQUIRE(co.CreateStore(Store({1, 3}, 1)).ok());
    REQUIRE(co.CreateStore(StoreWithService({2, 5}, 2, "127.1.9.2:2424")).ok());
    REQUIRE(co.AssignUsers(Users({"alice", "bob"}, 1)).ok());
    REQUIRE(co.AssignUsers(Users({"carol"}, 2)).ok());

    maps_ = std::make_unique<RoutingMaps>(
        [this](absl::string_view user) -> absl::StatusOr<std::optional<coordpb::StoreInfo>> {
          if (fail_database) {
            return absl::UnavailableError("database is locked (injected by the test)");
          }
          return coordinator_->UserStore(user);
        });
    options.listen = "127.0.0.1:0";
    server_ = std::make_unique<SocketmapServer>(io_, options, *maps_);
    REQUIRE(server_->Listen().ok());
    asio::co_spawn(io_, server_->Run(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~MapServer() {
    asio::post(io_, [this] { server_->Stop(); });
    thread_.join();
  }

  uint16_t port() const { return server_->port(); }

  // Runs fn on the io thread and waits for it.
  template <typename F>
  auto OnIo(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    asio::post(io_, [&task] { task(); });
    return result.get();
  }

  Coordinator& c() { return *coordinator_; }  // only inside OnIo
  SocketmapServerStats stats() {
    return OnIo([this] { return server_->stats(); });
  }
  size_t sessions() {
    return OnIo([this] { return server_->sessions(); });
  }

  std::atomic<bool> fail_database{false};

 private:
  TempDir dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<RoutingMaps> maps_;
  asio::io_context io_;
  std::unique_ptr<SocketmapServer> server_;
  std::thread thread_;
};

// A blocking socketmap client over TCP, as Postfix's: one connection, any
// number of requests in turn. Reads time out after 10 s (a test failure,
// never a wait for a condition).
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    timeval tv{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // False if the peer closed (EPIPE is not fatal: SIGPIPE is ignored).
  bool SendRaw(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // The next reply's payload; nullopt if the connection ended first.
  std::optional<std::string> Read() {
    for (;;) {
      const NetstringParse p = ParseNetstring(buffer_, 200000);
      REQUIRE(p.result != NetstringResult::kBad);
      if (p.result == NetstringResult::kGood) {
        std::string out(p.payload);
        buffer_.erase(0, p.consumed);
        return out;
      }
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        FAIL("no reply within 10 s");
      }
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
  std::string Ask(const std::string& request) {
    REQUIRE(SendRaw(EncodeNetstring(request)));
    std::optional<std::string> reply = Read();
    REQUIRE(reply.has_value());
    return *reply;
  }
  // True once the server closed the connection (a read returns 0 or
  // ECONNRESET) with nothing more to read.
  bool Closed() {
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

TEST_CASE("the transport map answers the master's LMTP address for user@domain and bare users",
          "[socketmap]") {
  MapServer s;
  Client c(s.port());
  CHECK(c.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.1:24");
  CHECK(c.Ask("transport Alice+lists@Example.COM") == "OK lmtp:inet:10.0.0.1:24");
  CHECK(c.Ask("transport bob") == "OK lmtp:inet:10.0.0.1:24");
  CHECK(c.Ask("mailbox bob@example.com") == "OK store-1");
}

TEST_CASE("a store's service address takes precedence over its master's address", "[socketmap]") {
  MapServer s;
  Client c(s.port());
  CHECK(c.Ask("transport carol@example.com") == "OK lmtp:inet:127.1.9.2:2424");
  // Cleared, the master's own address again.
  s.OnIo([&] {
    coordpb::SetServiceAddress r;
    r.set_store_id(2);
    REQUIRE(s.c().SetServiceAddress(r).ok());
  });
  CHECK(c.Ask("transport carol@example.com") == "OK lmtp:inet:10.0.0.2:24");
}

TEST_CASE("during a failover the transport map keeps the old master's route (never TEMP), "
          "after it the new master",
          "[socketmap]") {
  MapServer s;
  Client c(s.port());  // one connection throughout, as Postfix keeps its own
  REQUIRE(c.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.1:24");
  const FailoverPlan plan = s.OnIo([&] {
    coordpb::Failover f;
    f.set_store_id(1);
    f.set_to_slot_id(3);
    absl::StatusOr<FailoverPlan> p = s.c().BeginFailover(f);
    INFO(p.status().ToString());
    REQUIRE(p.ok());
    return *p;
  });
  // Postfix accepts the message and queues it; the fenced master answers
  // 451 until the switch, so Postfix retries it from its queue.
  CHECK(c.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.1:24");
  // The user still exists: recipient checks do not defer.
  CHECK(c.Ask("mailbox alice@example.com") == "OK store-1");
  // Carol's store is not switching.
  CHECK(c.Ask("transport carol@example.com") == "OK lmtp:inet:127.1.9.2:2424");
  s.OnIo([&] { REQUIRE(s.c().SwitchMaster(plan, 0).ok()); });
  CHECK(c.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.3:24");
  CHECK(c.Ask("transport bob") == "OK lmtp:inet:10.0.0.3:24");
}

TEST_CASE("unknown users and keys that are no user names get NOTFOUND", "[socketmap]") {
  MapServer s;
  Client c(s.port());
  for (const std::string& key : std::vector<std::string>{
           "nobody@example.com", "nobody", "@example.com", "\"a b\"@example.com", "", "example.com",
           std::string(100, 'x') + "@example.com"}) {
    INFO("key '" << key << "'");
    CHECK(c.Ask("transport " + key) == "NOTFOUND ");
    CHECK(c.Ask("mailbox " + key) == "NOTFOUND ");
  }
  // The connection is still good.
  CHECK(c.Ask("transport bob") == "OK lmtp:inet:10.0.0.1:24");
}

TEST_CASE("a database error answers TEMP, so Postfix defers instead of bouncing", "[socketmap]") {
  MapServer s;
  Client c(s.port());
  s.fail_database = true;
  const std::string transport = c.Ask("transport alice@example.com");
  CHECK(absl::StartsWith(transport, "TEMP "));
  CHECK(absl::StrContains(transport, "database is locked"));
  CHECK(absl::StartsWith(c.Ask("mailbox alice@example.com"), "TEMP "));
  s.fail_database = false;
  CHECK(c.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.1:24");
}

TEST_CASE("requests sent together are answered in order on one connection", "[socketmap]") {
  MapServer s;
  Client c(s.port());
  REQUIRE(c.SendRaw(EncodeNetstring("transport alice@x") + EncodeNetstring("transport nobody@x") +
                    EncodeNetstring("transport carol@x") + EncodeNetstring("mailbox bob@x")));
  CHECK(c.Read() == "OK lmtp:inet:10.0.0.1:24");
  CHECK(c.Read() == "NOTFOUND ");
  CHECK(c.Read() == "OK lmtp:inet:127.1.9.2:2424");
  CHECK(c.Read() == "OK store-1");
  // A request split over many writes (one byte each).
  for (char ch : EncodeNetstring("transport bob@example.com")) {
    REQUIRE(c.SendRaw(std::string(1, ch)));
  }
  CHECK(c.Read() == "OK lmtp:inet:10.0.0.1:24");
}

TEST_CASE("bad input gets PERM and closes that connection only", "[socketmap]") {
  struct Case {
    std::string name;
    std::string bytes;
    std::string reply;
  };
  const std::vector<Case> cases = {
      {"garbage", "GET / HTTP/1.0\r\n\r\n", "not a netstring"},
      {"oversized, said from its length alone", "99999:", "longer than 4096 bytes"},
      {"oversized, sent whole",
       EncodeNetstring("transport " + std::string(5000, 'a') + "@example.com"),
       "longer than 4096 bytes"},
      {"no comma after the data", "5:hello!", "does not end with ','"},
      {"unknown map", EncodeNetstring("virtual alice@example.com"), "unknown map 'virtual'"},
      {"no key", EncodeNetstring("transport"), "'NAME KEY'"},
  };
  MapServer s;
  Client other(s.port());
  REQUIRE(other.Ask("transport alice@example.com") == "OK lmtp:inet:10.0.0.1:24");
  uint64_t bad = 0;
  for (const Case& k : cases) {
    INFO(k.name);
    Client c(s.port());
    // A good request first: the bad one ends a connection that worked.
    REQUIRE(c.Ask("transport bob") == "OK lmtp:inet:10.0.0.1:24");
    c.SendRaw(k.bytes);  // the server may close before it read everything
    const std::optional<std::string> reply = c.Read();
    REQUIRE(reply.has_value());
    CHECK(absl::StartsWith(*reply, "PERM "));
    CHECK(absl::StrContains(*reply, k.reply));
    CHECK(c.Closed());
    ++bad;
    // The other connection, and new ones, keep working.
    CHECK(other.Ask("transport carol@example.com") == "OK lmtp:inet:127.1.9.2:2424");
    Client fresh(s.port());
    CHECK(fresh.Ask("mailbox alice") == "OK store-1");
  }
  CHECK(s.stats().bad_requests == bad);
  CHECK(WaitFor([&] { return s.sessions() == 1; },
                absl::Seconds(10)));  // `other`
}

TEST_CASE("an idle connection is closed after the idle timeout", "[socketmap]") {
  MapServer s({.idle_timeout = absl::Milliseconds(200)});
  Client idle(s.port());
  REQUIRE(idle.Ask("transport bob") == "OK lmtp:inet:10.0.0.1:24");
  CHECK(idle.Closed());  // blocks until the server closes it (at most 10 s)
  CHECK(WaitFor([&] { return s.sessions() == 0; }, absl::Seconds(10)));
}

TEST_CASE("with a domain list, only those domains' users are routed", "[socketmap]") {
  coordpb::StoreInfo store;
  store.set_store_id(7);
  store.set_master_slot_id(1);
  *store.add_members() = Slot(1);
  RoutingMaps maps(
      [&](absl::string_view) -> absl::StatusOr<std::optional<coordpb::StoreInfo>> { return store; },
      {"Example.COM", "example.net"});
  CHECK(maps.Answer("transport bob@example.com").reply == "OK lmtp:inet:10.0.0.1:24");
  CHECK(maps.Answer("transport bob@EXAMPLE.net").reply == "OK lmtp:inet:10.0.0.1:24");
  CHECK(maps.Answer("transport bob").reply == "OK lmtp:inet:10.0.0.1:24");
  CHECK(maps.Answer("transport bob@gmail.com").reply == "NOTFOUND ");
  CHECK(maps.Answer("mailbox bob@sub.example.com").reply == "NOTFOUND ");
  CHECK(maps.Answer("mailbox bob@example.com").reply == "OK store-7");
  CHECK(maps.stats().lookups == 6);
  CHECK(maps.stats().found == 4);
  CHECK(maps.stats().not_found == 2);
}

// --- the real coordinatord ---

std::string Bin(const std::string& name) {
  const char* bin = std::getenv("MAILREPL_BIN");
  if (bin == nullptr) throw std::runtime_error("MAILREPL_BIN is not set");
  return absl::StrCat(bin, "/", name);
}

// The number after `key=<` in text, 0 if none.
int NumberAfter(const std::string& text, const std::string& key) {
  const size_t at = text.find(key + "=<");
  if (at == std::string::npos) return 0;
  const size_t start = at + key.size() + 2;
  int n = 0;
  if (!absl::SimpleAtoi(text.substr(start, text.find('>', start) - start), &n)) return 0;
  return n;
}

TEST_CASE("coordinatord --socketmap-listen routes users created over its RPC and exits 0",
          "[socketmap][coordinator]") {
  TempDir dir;
  const std::string secret = "socketmap test secret";
  WriteSecret(dir.Sub("secret"), secret);
  Process p({Bin("coordinatord"), "--db", dir.Sub("coord.db"), "--listen", "127.0.0.1:0",
             "--secret-file", dir.Sub("secret"), "--cluster-id", "sm", "--lease-ms", "60000",
             "--socketmap-listen", "127.0.0.1:0"});
  REQUIRE(WaitFor([&] { return absl::StrContains(p.Stderr(), "socketmap_port=<") || !p.Running(); },
                  absl::Seconds(30)));
  INFO(p.Describe());
  const int rpc_port = NumberAfter(p.Stderr(), "port");
  const int map_port = NumberAfter(p.Stderr(), "socketmap_port");
  REQUIRE(rpc_port > 0);
  REQUIRE(map_port > 0);

  const rpc::RpcClientOptions options{.address = absl::StrCat("127.0.0.1:", rpc_port),
                                      .service = "coordinator",
                                      .secret = secret,
                                      .client = "socketmap_test"};
  auto call = [&](coordpb::Request r) {
    absl::StatusOr<coordpb::Response> resp =
        rpc::CallOnce<coordpb::Response>(options, r, absl::Seconds(10));
    INFO(resp.status().ToString());
    REQUIRE(resp.ok());
  };
  coordpb::Request r;
  *r.mutable_register_host() = Host("h1", {1});
  call(r);
  *r.mutable_register_host() = Host("h2", {2});
  call(r);
  *r.mutable_create_store() = Store({1, 2}, 1);
  call(r);
  *r.mutable_assign_users() = Users({"dave"}, 1);
  call(r);

  Client c(static_cast<uint16_t>(map_port));
  CHECK(c.Ask("transport dave@example.com") == "OK lmtp:inet:10.0.0.1:24");
  CHECK(c.Ask("transport erin@example.com") == "NOTFOUND ");
  {
    Client bad(static_cast<uint16_t>(map_port));
    bad.SendRaw("garbage");
    const std::optional<std::string> reply = bad.Read();
    REQUIRE(reply.has_value());
    CHECK(absl::StartsWith(*reply, "PERM "));
    CHECK(bad.Closed());
  }
  CHECK(c.Ask("mailbox dave") == "OK store-1");

  p.Signal(SIGTERM);
  CHECK(p.Wait(absl::Seconds(20)) == 0);
  CHECK(absl::StrContains(p.Stderr(), "socketmap_bad_requests=<1>"));
}

TEST_CASE("coordinatord refuses a bad --socketmap-listen with exit 2", "[socketmap][coordinator]") {
  TempDir dir;
  WriteSecret(dir.Sub("secret"), "socketmap test secret");
  Process p({Bin("coordinatord"), "--db", dir.Sub("coord.db"), "--listen", "127.0.0.1:0",
             "--secret-file", dir.Sub("secret"), "--socketmap-listen", "not-an-address"});
  CHECK(p.Wait(absl::Seconds(20)) == 2);
  CHECK(absl::StrContains(p.Stderr(), "--socketmap-listen"));
}

}  // namespace
}  // namespace mailrepl::coord
