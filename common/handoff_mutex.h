// HandoffMutex: a mutex that one thread may lock and another unlock.
//
// std::mutex must be unlocked by the thread that locked it. The slot's group
// commit needs a hand-off: the commit leader locks the index before it
// acknowledges a batch (so that whoever reads the index next waits for the
// batch), and the applier thread unlocks it once the batch is in the index.
// A flag under a std::mutex with a condition variable does it without
// system calls while uncontended (std::binary_semaphore in libstdc++ 12
// spins with sched_yield and makes a futex call at every release, which
// cost the commit path several syscalls per message). BasicLockable and
// Lockable, so std::lock_guard and std::unique_lock work with it; not
// recursive.
#ifndef MAILREPL_COMMON_HANDOFF_MUTEX_H_
#define MAILREPL_COMMON_HANDOFF_MUTEX_H_

#include <condition_variable>
#include <mutex>

namespace mailrepl {

class HandoffMutex {
 public:
  HandoffMutex() = default;
  HandoffMutex(const HandoffMutex&) = delete;
  HandoffMutex& operator=(const HandoffMutex&) = delete;

  void lock() {
    std::unique_lock<std::mutex> l(mu_);
    ++waiters_;
    free_.wait(l, [&] { return !locked_; });
    --waiters_;
    locked_ = true;
  }
  bool try_lock() {
    std::lock_guard<std::mutex> l(mu_);
    if (locked_) return false;
    locked_ = true;
    return true;
  }
  void unlock() {
    bool wake;
    {
      std::lock_guard<std::mutex> l(mu_);
      locked_ = false;
      wake = waiters_ > 0;
    }
    if (wake) free_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable free_;
  bool locked_ = false;
  int waiters_ = 0;
};

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_HANDOFF_MUTEX_H_
