// HandoffMutex: a mutex that one thread may lock and another unlock.
//
// std::mutex must be unlocked by the thread that locked it. The slot's group
// commit needs a hand-off: the commit leader locks the index before it
// acknowledges a batch (so that whoever reads the index next waits for the
// batch), and the applier thread unlocks it once the batch is in the index.
// A flag under a mutex with a condition variable does it without system
// calls while uncontended (std::binary_semaphore in libstdc++ 12 spins with
// sched_yield and makes a futex call at every release, which cost the
// commit path several syscalls per message). BasicLockable and Lockable, so
// std::lock_guard and std::unique_lock work with it; not recursive.
//
// ABSL_LOCKABLE: fields it guards are ABSL_GUARDED_BY it, and clang's
// -Wthread-safety checks them. Ordinary uses lock and unlock on one thread
// (HandoffLock, or lock()/unlock()/try_lock()). The hand-off itself is what
// the analysis cannot follow, since it checks one function at a time and
// knows nothing of threads: the locking thread calls LockForHandoff() (not
// annotated as acquiring), the receiving thread calls ReceiveHandoff() (an
// assertion that it holds the lock) and then unlock().
#ifndef MAILREPL_COMMON_HANDOFF_MUTEX_H_
#define MAILREPL_COMMON_HANDOFF_MUTEX_H_

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace mailrepl {

class ABSL_LOCKABLE HandoffMutex {
 public:
  HandoffMutex() = default;
  HandoffMutex(const HandoffMutex&) = delete;
  HandoffMutex& operator=(const HandoffMutex&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    MutexLock l(mu_);
    ++waiters_;
    while (locked_) free_.Wait(l);
    --waiters_;
    locked_ = true;
  }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    MutexLock l(mu_);
    if (locked_) return false;
    locked_ = true;
    return true;
  }
  void unlock() ABSL_UNLOCK_FUNCTION() {
    bool wake;
    {
      MutexLock l(mu_);
      locked_ = false;
      wake = waiters_ > 0;
    }
    if (wake) free_.Signal();
  }

  // Locks on behalf of another thread, which calls ReceiveHandoff() and
  // unlock(). Escape hatch: the lock taken here is released on another
  // thread, so for the analysis this function acquires nothing (annotated
  // as acquiring, every caller would be told it still holds the lock when
  // it returns).
  void LockForHandoff() ABSL_NO_THREAD_SAFETY_ANALYSIS { lock(); }
  // The receiving side of LockForHandoff(): tells the analysis that this
  // thread now holds the lock (it cannot see the other thread's lock()).
  // Checks nothing at run time.
  void ReceiveHandoff() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  Mutex mu_;
  CondVar free_;
  bool locked_ ABSL_GUARDED_BY(mu_) = false;
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

// Holds a HandoffMutex for its scope (std::lock_guard, annotated).
class ABSL_SCOPED_LOCKABLE HandoffLock {
 public:
  explicit HandoffLock(HandoffMutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_.lock(); }
  ~HandoffLock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  HandoffLock(const HandoffLock&) = delete;
  HandoffLock& operator=(const HandoffLock&) = delete;

 private:
  HandoffMutex& mu_;
};

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_HANDOFF_MUTEX_H_
