// The io-thread rule (common/io_thread.h): a blocking slot call on a thread
// that runs an io_context aborts a build with assertions, and Offload moves
// the call to a worker, where it runs.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <thread>

#include "asio.hpp"
#include "common/io_thread.h"
#include "common/offload.h"
#include "test/test_util.h"

namespace mailrepl {
namespace {

// Runs fn in a child process; its wait status.
template <typename Fn>
int InChild(Fn fn) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

TEST_CASE("a blocking slot call on an io thread aborts a build with assertions", "[io]") {
  testing::TempDir dir;
  std::unique_ptr<Slot> slot = testing::NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/a").ok());
  const int status = InChild([&] {
    IoThreadScope io_thread;
    (void)slot->last_lsn();
  });
#ifndef NDEBUG
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
#else
  // Without assertions the check costs nothing and lets the call through.
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
#endif
}

TEST_CASE("the same call offloaded from a coroutine on the io thread runs on a worker", "[io]") {
  testing::TempDir dir;
  std::unique_ptr<Slot> slot = testing::NewSlot(dir.path());
  REQUIRE(slot->CreateMailbox("user/a").ok());
  asio::io_context io;
  asio::thread_pool pool(1);
  uint64_t last = 0;
  bool worker_marked = true;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        last = co_await Offload(pool.get_executor(), [&] {
          worker_marked = OnIoThread();
          return slot->last_lsn();
        });
        CHECK(OnIoThread());  // resumed on the io thread
      },
      asio::detached);
  {
    IoThreadScope io_thread;
    io.run();
  }
  pool.join();
  CHECK_FALSE(worker_marked);
  CHECK(last == slot->last_lsn());
  CHECK(last > 0);
}

TEST_CASE("an io thread scope marks only its own thread, and only while it lasts", "[io]") {
  CHECK_FALSE(OnIoThread());
  {
    IoThreadScope outer;
    CHECK(OnIoThread());
    {
      IoThreadScope inner;
      CHECK(OnIoThread());
    }
    CHECK(OnIoThread());
    bool other = true;
    std::thread([&] { other = OnIoThread(); }).join();
    CHECK_FALSE(other);
  }
  CHECK_FALSE(OnIoThread());
}

}  // namespace
}  // namespace mailrepl
