// transport::Server over real sockets on 127.0.0.1: the connection cap
// (pausing and refusing), back-off when accept fails (out of descriptors),
// a session that throws, Stop(). Everything runs on the test's thread: the
// test drives the io_context until a condition holds or a deadline passes.
#include "transport/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "asio.hpp"
#include "catch2/catch.hpp"
#include "transport/net.h"

namespace mailrepl::transport {
namespace {

using asio::ip::tcp;

struct Conn {
  tcp::socket socket;
  std::string peer;
};

// Echoes what it reads until the peer closes; throws when it reads a '!'.
asio::awaitable<void> Echo(std::shared_ptr<Conn> c) {
  char buf[256];
  for (;;) {
    asio::error_code ec;
    const size_t n =
        co_await c->socket.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    if (std::string(buf, n).find('!') != std::string::npos) {
      throw std::runtime_error("boom from the test session");
    }
    co_await asio::async_write(c->socket, asio::buffer(buf, n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

class TestServer {
 public:
  explicit TestServer(asio::io_context& io, ServerOptions options = {})
      : server_(
            io, WithDefaults(std::move(options)),
            [](tcp::socket s, std::string peer) {
              return std::make_shared<Conn>(Conn{std::move(s), std::move(peer)});
            },
            Echo) {
    REQUIRE(server_.Listen().ok());
    asio::co_spawn(io, server_.Run(), [this](std::exception_ptr) { run_ended_ = true; });
  }
  Server<Conn>& operator*() { return server_; }
  Server<Conn>* operator->() { return &server_; }
  bool run_ended() const { return run_ended_; }
  tcp::endpoint endpoint() const { return {asio::ip::make_address("127.0.0.1"), server_.port()}; }

 private:
  static ServerOptions WithDefaults(ServerOptions o) {
    if (o.name.empty()) o.name = "test";
    if (o.listen.empty()) o.listen = "127.0.0.1:0";
    return o;
  }
  Server<Conn> server_;
  bool run_ended_ = false;
};

// Runs io until cond() holds (true) or timeout has passed (false).
bool RunUntil(asio::io_context& io, const std::function<bool()>& cond,
              absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds(10));
  }
  return true;
}

// A client socket on io that collects what it receives until EOF.
struct Client {
  explicit Client(asio::io_context& io) : socket(io) {}
  void Connect(const tcp::endpoint& ep) {
    socket.connect(ep);  // completes from the backlog: no accept needed
    Read();
  }
  void Send(const std::string& bytes) { asio::write(socket, asio::buffer(bytes)); }

  tcp::socket socket;
  std::string received;
  asio::error_code ec;
  bool done = false;  // the server closed the connection (or it failed)

 private:
  void Read() {
    socket.async_read_some(asio::buffer(buf), [this](const asio::error_code& e, size_t n) {
      received.append(buf, n);
      if (e) {
        ec = e;
        done = true;
        return;
      }
      Read();
    });
  }
  char buf[256];
};

// Sends stderr to a file until Stop() (or destruction), to check log lines.
class StderrCapture {
 public:
  StderrCapture() {
    char path[] = "/tmp/server_test_stderr_XXXXXX";
    fd_ = mkstemp(path);
    REQUIRE(fd_ >= 0);
    unlink(path);
    saved_ = dup(2);
    REQUIRE(saved_ >= 0);
    REQUIRE(dup2(fd_, 2) == 2);
  }
  ~StderrCapture() { Stop(); }
  std::string Stop() {
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      std::string text;
      char buf[4096];
      ssize_t n;
      off_t at = 0;
      while ((n = pread(fd_, buf, sizeof(buf), at)) > 0) {
        text.append(buf, n);
        at += n;
      }
      close(fd_);
      text_ = text;
      // Keep the lines visible in the test's output.
      ssize_t ignored = write(2, text.data(), text.size());
      (void)ignored;
    }
    return text_;
  }

 private:
  int fd_ = -1;
  int saved_ = -1;
  std::string text_;
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Uses up every file descriptor the process may open, until Restore() (or
// destruction): the soft RLIMIT_NOFILE drops to just above the highest open
// descriptor and the free ones below it are taken.
class OutOfDescriptors {
 public:
  OutOfDescriptors() {
    REQUIRE(getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    int highest = 2;
    if (DIR* d = opendir("/proc/self/fd")) {
      while (dirent* e = readdir(d)) highest = std::max(highest, std::atoi(e->d_name));
      closedir(d);
    }
    rlimit lower = saved_;
    lower.rlim_cur = static_cast<rlim_t>(highest) + 1;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &lower) == 0);
    for (;;) {
      const int fd = dup(0);
      if (fd < 0) break;
      taken_.push_back(fd);
    }
    CHECK(errno == EMFILE);
  }
  ~OutOfDescriptors() { Restore(); }
  void Restore() {
    for (int fd : taken_) close(fd);
    taken_.clear();
    setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  std::vector<int> taken_;
};

TEST_CASE("a server at its connection cap pauses accepting until a session ends", "[server]") {
  asio::io_context io;
  TestServer server(io, {.max_connections = 2});
  Client a(io), b(io), c(io);
  a.Connect(server.endpoint());
  b.Connect(server.endpoint());
  REQUIRE(RunUntil(io, [&] { return server->stats().accepted == 2; }));
  c.Connect(server.endpoint());
  // The third connection waits in the backlog (a bounded window, not a wait
  // for something that should happen).
  CHECK_FALSE(RunUntil(io, [&] { return server->stats().accepted == 3; }, absl::Milliseconds(200)));
  CHECK(server->stats().refused == 0);
  CHECK_FALSE(c.done);

  a.socket.shutdown(tcp::socket::shutdown_send);  // its session reads EOF and ends
  REQUIRE(RunUntil(io, [&] { return server->stats().accepted == 3; }));
  c.Send("hello");
  REQUIRE(RunUntil(io, [&] { return c.received == "hello"; }));
  CHECK(server->stats().open == 2);

  server->Stop([](Conn& conn) { conn.socket.close(); });
  REQUIRE(RunUntil(io, [&] { return server.run_ended(); }));
}

TEST_CASE("a server at its connection cap with a refuse callback answers and closes new "
          "connections, and the open ones carry on",
          "[server]") {
  asio::io_context io;
  TestServer server(io, {.max_connections = 1, .refuse = [](tcp::socket& s) {
                           asio::error_code ec;
                           s.write_some(asio::buffer(std::string("busy\r\n")), ec);
                         }});
  Client a(io), b(io), c(io);
  a.Connect(server.endpoint());
  REQUIRE(RunUntil(io, [&] { return server->stats().accepted == 1; }));
  b.Connect(server.endpoint());
  c.Connect(server.endpoint());
  REQUIRE(RunUntil(io, [&] { return b.done && c.done; }));
  CHECK(b.received == "busy\r\n");
  CHECK(c.received == "busy\r\n");
  CHECK(server->stats().refused == 2);
  CHECK(server->stats().accepted == 1);
  a.Send("still here");
  REQUIRE(RunUntil(io, [&] { return a.received == "still here"; }));

  server->Stop([](Conn& conn) { conn.socket.close(); });
  REQUIRE(RunUntil(io, [&] { return server.run_ended() && a.done; }));
}

TEST_CASE("a server out of file descriptors backs off instead of spinning", "[server]") {
  asio::io_context io;
  TestServer server(io);
  Client client(io);
  client.socket.open(tcp::v4());  // its descriptor, before they run out
  StderrCapture log;
  {
    OutOfDescriptors out;
    client.Connect(server.endpoint());
    REQUIRE(RunUntil(io, [&] { return server->stats().accept_errors >= 1; }));
    // A window of 300 ms: with 10 ms doubling, accept fails at about 0, 10,
    // 30, 70, 150 ms and 310 ms; a loop retrying at once would count
    // thousands.
    io.run_for(std::chrono::milliseconds(300));
    CHECK(server->stats().accept_errors >= 3);
    CHECK(server->stats().accept_errors <= 8);
    CHECK(server->stats().accepted == 0);
    out.Restore();
    // The next try (at most 1 s away) succeeds.
    REQUIRE(RunUntil(io, [&] { return server->stats().accepted == 1; }, absl::Seconds(5)));
  }
  const uint64_t errors = server->stats().accept_errors;
  client.Send("hi");
  REQUIRE(RunUntil(io, [&] { return client.received == "hi"; }));
  CHECK(server->stats().accept_errors == errors);

  server->Stop([](Conn& conn) { conn.socket.close(); });
  REQUIRE(RunUntil(io, [&] { return server.run_ended(); }));
  const std::string text = log.Stop();
  CHECK(Count(text, "accept failed, backing off") == 1);
  CHECK(Count(text, "accepting again") == 1);
}

TEST_CASE("an exception thrown by a session is logged and the server keeps accepting",
          "[server]") {
  asio::io_context io;
  TestServer server(io, {.name = "thrower"});
  StderrCapture log;
  Client bad(io);
  bad.Connect(server.endpoint());
  bad.Send("!");
  REQUIRE(RunUntil(io, [&] { return server->stats().session_failures == 1; }));
  CHECK(server->stats().open == 0);
  CHECK(server->sessions().empty());
  REQUIRE(RunUntil(io, [&] { return bad.done; }));  // its socket is closed with the session

  Client good(io);
  good.Connect(server.endpoint());
  good.Send("echo");
  REQUIRE(RunUntil(io, [&] { return good.received == "echo"; }));
  CHECK(server->stats().accepted == 2);

  server->Stop([](Conn& conn) { conn.socket.close(); });
  REQUIRE(RunUntil(io, [&] { return server.run_ended(); }));
  const std::string text = log.Stop();
  CHECK(absl::StrContains(text, "coroutine ended by an exception"));
  CHECK(absl::StrContains(text, "boom from the test session"));
  CHECK(absl::StrContains(text, "thrower session with 127.0.0.1:"));
}

TEST_CASE("Stop ends every session and the accept loop", "[server]") {
  asio::io_context io;
  TestServer server(io);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<Client>(io));
    clients.back()->Connect(server.endpoint());
  }
  REQUIRE(RunUntil(io, [&] { return server->sessions().size() == 3; }));
  int ended = 0;
  server->Stop([&](Conn& conn) {
    ++ended;
    conn.socket.close();
  });
  CHECK(ended == 3);
  REQUIRE(RunUntil(io, [&] { return server.run_ended(); }));
  CHECK(server->sessions().empty());
  CHECK(server->stats().open == 0);
  for (const auto& c : clients) {
    REQUIRE(RunUntil(io, [&] { return c->done; }));
    CHECK(c->ec == asio::error::eof);
  }
  // Nothing listens any more.
  tcp::socket late(io);
  asio::error_code ec;
  late.connect(server.endpoint(), ec);
  CHECK(ec == asio::error::connection_refused);
}

TEST_CASE("after Stop, Run returns only once the last session has ended", "[server]") {
  asio::io_context io;
  TestServer server(io);
  Client client(io);
  client.Connect(server.endpoint());
  REQUIRE(RunUntil(io, [&] { return server->stats().open == 1; }));
  server->Stop();  // the session is left to end on its own
  CHECK_FALSE(RunUntil(io, [&] { return server.run_ended(); }, absl::Milliseconds(200)));
  client.Send("last words");
  REQUIRE(RunUntil(io, [&] { return client.received == "last words"; }));
  client.socket.shutdown(tcp::socket::shutdown_send);
  REQUIRE(RunUntil(io, [&] { return server.run_ended(); }));
  CHECK(server->stats().open == 0);
}

TEST_CASE("Run without Listen returns at once with a log line", "[server]") {
  asio::io_context io;
  Server<Conn> server(
      io, {.name = "unbound", .listen = "127.0.0.1:0"},
      [](tcp::socket s, std::string peer) {
        return std::make_shared<Conn>(Conn{std::move(s), std::move(peer)});
      },
      Echo);
  bool ended = false;
  StderrCapture log;
  asio::co_spawn(io, server.Run(), [&](std::exception_ptr) { ended = true; });
  REQUIRE(RunUntil(io, [&] { return ended; }));
  CHECK(absl::StrContains(log.Stop(), "call Listen() before Run()"));
}

TEST_CASE("an address with a NUL or another control byte is refused, not cut at the NUL",
          "[server]") {
  CHECK(transport::ParseEndpoint("127.0.0.1:24").ok());
  CHECK(transport::ParseEndpoint("[::1]:24").ok());
  for (const std::string& bad : {std::string("127.0.0.1\0junk:24", 18), std::string("127.0.0.1 :24"),
                                 std::string("127.0.0.1:2\n4"), std::string("127.0.0.1:24\x80")}) {
    INFO(absl::CEscape(bad));
    absl::StatusOr<asio::ip::tcp::endpoint> ep = transport::ParseEndpoint(bad);
    CHECK(absl::IsInvalidArgument(ep.status()));
  }
}

}  // namespace
}  // namespace mailrepl::transport
