// File: replicad/work_pool.h
//
// Where a host's blocking work runs. One io thread serves every slot of a
// host (common/io_thread.h), so every call that may block (a Slot call, an
// fsync, a file read, a hook) runs on the host's worker pool, a HostPool
// created once by Replicad and shared by every slot: LMTP deliveries, client
// API calls, role changes, the slot-facts refresh, salvage file I/O, hooks,
// the role cache, and (SyncServerOptions.blocking) the sync servers' slot
// work.
//
// Size: HostPool::DefaultThreads() = max(16, 2 * cores + 8). Most of this
// work waits on a disk (an fsync) rather than computing, so the pool is
// larger than the core count; 16 at least keeps a group commit fed with
// several writers per slot on a small machine.
//
// A shared pool needs a bound per slot: a slot whose disk stalls would
// otherwise take every worker, one blocked delivery at a time, and starve
// the other slots. Each slot's work goes through its own WorkGate, which lets
// at most `limit` of that slot's jobs run at once (SlotHost uses
// max(2, threads / 2)); the rest wait in FIFO order without holding a
// worker. (asio::strand is no such bound: it runs one job at a time, and
// its queued jobs do not hold workers, but it gives no concurrency to a busy
// slot and cannot cap a stalled slot's share at more than one.)
//
// Thread-safe.
//
// Example:
//   HostPool pool(HostPool::DefaultThreads());
//   WorkGate work(pool.executor(), 8);
//   uint64_t last = co_await work.Run([&] { return slot.last_lsn(); });
#ifndef MAILREPL_REPLICAD_WORK_POOL_H_
#define MAILREPL_REPLICAD_WORK_POOL_H_

#include <deque>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "asio.hpp"
#include "common/log_exceptions.h"
#include "common/mutex.h"
#include "common/offload.h"

namespace mailrepl::replicad {

class HostPool {
 public:
  explicit HostPool(int threads);
  // Joins: waits for the work still queued.
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  asio::any_io_executor executor() { return pool_.get_executor(); }
  int threads() const { return threads_; }
  // max(16, 2 * hardware threads + 8): see the file comment.
  static int DefaultThreads();

 private:
  const int threads_;
  asio::thread_pool pool_;
};

class WorkGate {
 private:
  // (The helpers come first: Run() below uses them.)
  struct State {
    State(asio::any_io_executor p, int l) : pool(std::move(p)), limit(l) {}
    const asio::any_io_executor pool;
    const int limit;
    Mutex mu;
    CondVar idle_cv;
    int running ABSL_GUARDED_BY(mu) = 0;
    int executing ABSL_GUARDED_BY(mu) = 0;
    bool closed ABSL_GUARDED_BY(mu) = false;
    std::deque<std::function<void()>> waiters ABSL_GUARDED_BY(mu);
  };
  // Holds a place until destroyed.
  struct Held {
    explicit Held(std::shared_ptr<State> s) : state(std::move(s)) {}
    ~Held() { Release(*state); }
    std::shared_ptr<State> state;
  };
  // Counts a job running on a worker; run is false after Close().
  struct Executing {
    explicit Executing(std::shared_ptr<State> s);
    ~Executing();
    std::shared_ptr<State> state;
    bool run = true;
  };

  // Takes a place at once if one is free and nobody waits: no round trip
  // through the caller's executor on the uncontended path of every job.
  static bool TryAcquire(State& state) {
    MutexLock l(state.mu);
    if (state.running >= state.limit || !state.waiters.empty()) return false;
    ++state.running;
    return true;
  }
  // Completes once this caller holds a place (FIFO), without blocking.
  static auto Acquire(std::shared_ptr<State> state) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
        [state](auto handler) { Enqueue(*state, std::move(handler)); }, asio::use_awaitable);
  }
  template <typename Handler>
  static void Enqueue(State& state, Handler handler) {
    asio::any_io_executor ex = asio::get_associated_executor(handler, state.pool);
    auto h = std::make_shared<Handler>(std::move(handler));
    std::function<void()> resume = [ex, h] { asio::post(ex, [h] { (*h)(); }); };
    {
      MutexLock l(state.mu);
      if (state.running >= state.limit) {
        state.waiters.push_back(std::move(resume));
        return;
      }
      ++state.running;
    }
    resume();
  }
  static void Release(State& state);

 public:
  // pool must outlive the work run through the gate; limit >= 1.
  WorkGate(asio::any_io_executor pool, int limit);
  // Close() first when the jobs use what the owner is about to destroy.
  // Jobs still queued keep the gate's state alive (they do not run).
  ~WorkGate();
  WorkGate(const WorkGate&) = delete;
  WorkGate& operator=(const WorkGate&) = delete;

  // Runs fn on the pool once fewer than `limit` jobs of this gate run, and
  // resumes the caller on its own executor with fn's result. fn may use the
  // caller's locals by reference. After Close(), fn is not run and the
  // result is a default-constructed one.
  template <typename Fn>
  asio::awaitable<std::invoke_result_t<Fn&>> Run(Fn fn) {
    using Result = std::invoke_result_t<Fn&>;
    static_assert(std::is_void_v<Result> || std::is_default_constructible_v<Result>);
    std::shared_ptr<State> state = state_;
    if (!TryAcquire(*state)) co_await Acquire(state);
    Held held(state);
    // A named local: GCC 12 destroys lambda temporaries of a co_await
    // expression twice (GCC bug 99576).
    auto work = [state, &fn]() -> Result {
      Executing e(state);
      if constexpr (std::is_void_v<Result>) {
        if (e.run) fn();
      } else {
        if (!e.run) return Result{};
        return fn();
      }
    };
    co_return co_await Offload(state->pool, std::move(work));
  }

  // The same without waiting for it, from any thread.
  void Post(std::function<void()> fn);

  // Stops running new jobs and waits (blocking) until none runs. For the
  // owner's destructor, once its io_context stopped.
  void Close();

  int limit() const { return state_->limit; }
  // Jobs holding a place (running, or handed a place and about to run).
  int running() const;
  // Jobs waiting for a place.
  int waiting() const;
  asio::any_io_executor pool() const { return state_->pool; }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace mailrepl::replicad

#endif  // MAILREPL_REPLICAD_WORK_POOL_H_
