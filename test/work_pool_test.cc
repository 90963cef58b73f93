// Tests of the host pool's per-slot bound (replicad/work_pool.h): a slot
// whose work stalls holds at most its limit of workers, the others keep
// running, and queued work runs in order.
#include "replicad/work_pool.h"

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "asio.hpp"
#include "catch2/catch.hpp"
#include "common/mutex.h"

namespace mailrepl::replicad {
namespace {

TEST_CASE("a stalled slot holds at most its limit of workers", "[work_pool]") {
  HostPool pool(4);
  WorkGate stalled(pool.executor(), 2);
  WorkGate healthy(pool.executor(), 2);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> running{0}, most{0};
  for (int i = 0; i < 6; ++i) {
    stalled.Post([&] {
      const int now = ++running;
      int m = most;
      while (m < now && !most.compare_exchange_weak(m, now)) {
      }
      released.wait();
      --running;
    });
  }
  // The healthy slot's work runs although six jobs of the other wait.
  std::promise<void> ran;
  healthy.Post([&] { ran.set_value(); });
  REQUIRE(ran.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  for (int i = 0; i < 1000 && most < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(most == 2);
  CHECK(stalled.running() == 2);
  CHECK(stalled.waiting() == 4);
  release.set_value();
  for (int i = 0; i < 500 && (stalled.running() > 0 || stalled.waiting() > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(stalled.running() == 0);
  CHECK(most == 2);
}

TEST_CASE("a gate of one runs its work in the order asked", "[work_pool]") {
  HostPool pool(4);
  WorkGate serial(pool.executor(), 1);
  Mutex mu;
  std::vector<int> order;
  std::promise<void> done;
  for (int i = 0; i < 20; ++i) {
    serial.Post([&, i] {
      MutexLock l(mu);
      order.push_back(i);
      if (i == 19) done.set_value();
    });
  }
  REQUIRE(done.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  MutexLock l(mu);
  for (int i = 0; i < 20; ++i) CHECK(order[i] == i);
}

TEST_CASE("Run resumes the caller on its own executor with the result", "[work_pool]") {
  HostPool pool(2);
  WorkGate gate(pool.executor(), 1);
  asio::io_context io;
  std::thread::id io_thread, work_thread, resumed_on;
  int result = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        io_thread = std::this_thread::get_id();
        result = co_await gate.Run([&] {
          work_thread = std::this_thread::get_id();
          return 42;
        });
        resumed_on = std::this_thread::get_id();
      },
      asio::detached);
  io.run();
  CHECK(result == 42);
  CHECK(work_thread != io_thread);
  CHECK(resumed_on == io_thread);
}

TEST_CASE("after Close no work runs", "[work_pool]") {
  std::atomic<bool> ran{false};
  {
    HostPool pool(2);
    WorkGate gate(pool.executor(), 1);
    gate.Close();
    gate.Post([&] { ran = true; });
  }  // the pool's destructor waits for everything posted to it
  CHECK_FALSE(ran);
}

}  // namespace
}  // namespace mailrepl::replicad
