// The project's lock types: std::mutex and std::condition_variable with the
// annotations clang's -Wthread-safety checks (ABSL_GUARDED_BY and friends
// mean nothing on libstdc++'s unannotated types).
//
// Built on std::mutex rather than absl::Mutex so that ThreadSanitizer sees
// every acquire and release (Debian's Abseil is not built with TSan).
//
// Example:
//   Mutex mu_;
//   CondVar ready_cv_;
//   bool ready_ ABSL_GUARDED_BY(mu_) = false;
//   ...
//   MutexLock l(mu_);
//   while (!ready_) ready_cv_.Wait(l);
//
// Waits are written as loops over the condition, not with a predicate
// lambda: the analysis checks a lambda's body without knowing which locks
// its caller holds.
//
// A function that needs the lock held and waits takes the caller's lock:
//   void FooLocked(MutexLock& l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
// The analysis cannot tell which Mutex a MutexLock parameter holds, so such
// a function releases the lock for a while with mu_.unlock() ... mu_.lock()
// (not l.Unlock()/l.Lock(), which only a MutexLock of the same scope may
// call), and holds it again when it returns.
#ifndef MAILREPL_COMMON_MUTEX_H_
#define MAILREPL_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace mailrepl {

class CondVar;

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  // For code paths the analysis cannot follow: tells it the lock is held.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds a Mutex for its scope; may be released and taken again inside it
// (Unlock/Lock), and is what a CondVar waits with.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : lock_(mu.mu_) {}
  ~MutexLock() ABSL_UNLOCK_FUNCTION() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() ABSL_UNLOCK_FUNCTION() { lock_.unlock(); }
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { lock_.lock(); }

 private:
  friend class CondVar;
  std::unique_lock<std::mutex> lock_;
};

class CondVar {
 public:
  // Releases the lock, waits for a notification (or a spurious wake-up),
  // takes the lock again.
  void Wait(MutexLock& l) { cv_.wait(l.lock_); }
  // As Wait, for at most `timeout`; false if it ran out.
  bool WaitFor(MutexLock& l, absl::Duration timeout) {
    return cv_.wait_for(l.lock_, absl::ToChronoNanoseconds(timeout)) ==
           std::cv_status::no_timeout;
  }
  // As Wait, until `deadline`; false if it passed. For a loop that must not
  // wait longer in total than a fixed time, whatever the wake-ups.
  bool WaitUntil(MutexLock& l, std::chrono::steady_clock::time_point deadline) {
    return cv_.wait_until(l.lock_, deadline) == std::cv_status::no_timeout;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_MUTEX_H_
