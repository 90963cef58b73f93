#include "replicad/work_pool.h"

#include <algorithm>
#include <thread>

namespace mailrepl::replicad {

HostPool::HostPool(int threads) : threads_(std::max(1, threads)), pool_(threads_) {}

HostPool::~HostPool() { pool_.join(); }

int HostPool::DefaultThreads() {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(16, 2 * cores + 8);
}

WorkGate::WorkGate(asio::any_io_executor pool, int limit)
    : state_(std::make_shared<State>(std::move(pool), std::max(1, limit))) {}

WorkGate::~WorkGate() {
  std::deque<std::function<void()>> dropped;
  MutexLock l(state_->mu);
  state_->closed = true;
  dropped.swap(state_->waiters);
  l.Unlock();
  // The waiters' handlers (which may own coroutine frames) are destroyed
  // here, outside the lock.
}

WorkGate::Executing::Executing(std::shared_ptr<State> s) : state(std::move(s)) {
  MutexLock l(state->mu);
  if (state->closed) {
    run = false;
    return;
  }
  ++state->executing;
}

WorkGate::Executing::~Executing() {
  if (!run) return;
  MutexLock l(state->mu);
  if (--state->executing == 0) state->idle_cv.SignalAll();
}

void WorkGate::Post(std::function<void()> fn) {
  // Takes its place in the queue here, on the caller's thread, so that jobs
  // posted one after another start in that order.
  std::shared_ptr<State> state = state_;
  Enqueue(*state, [state, fn = std::move(fn)] {
    Held held(state);
    Executing e(state);
    if (!e.run) return;
    try {
      fn();
    } catch (...) {
      LogExceptions("slot work")(std::current_exception());
    }
  });
}

void WorkGate::Release(State& state) {
  std::function<void()> next;
  {
    MutexLock l(state.mu);
    if (state.waiters.empty()) {
      --state.running;
      return;
    }
    next = std::move(state.waiters.front());
    state.waiters.pop_front();
  }
  next();  // hands this place to the first waiter
}

void WorkGate::Close() {
  MutexLock l(state_->mu);
  state_->closed = true;
  while (state_->executing > 0) state_->idle_cv.Wait(l);
}

int WorkGate::running() const {
  MutexLock l(state_->mu);
  return state_->running;
}

int WorkGate::waiting() const {
  MutexLock l(state_->mu);
  return static_cast<int>(state_->waiters.size());
}

}  // namespace mailrepl::replicad
