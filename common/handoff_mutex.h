// HandoffMutex: a mutex that one thread may lock and another unlock.
//
// std::mutex must be unlocked by the thread that locked it. The slot's group
// commit needs a hand-off: the commit leader locks the index before it
// acknowledges a batch (so that whoever reads the index next waits for the
// batch), and the applier thread unlocks it once the batch is in the index.
// A binary semaphore is exactly that. BasicLockable and Lockable, so
// std::lock_guard and std::unique_lock work with it; not recursive.
#ifndef MAILREPL_COMMON_HANDOFF_MUTEX_H_
#define MAILREPL_COMMON_HANDOFF_MUTEX_H_

#include <semaphore>

namespace mailrepl {

class HandoffMutex {
 public:
  HandoffMutex() = default;
  HandoffMutex(const HandoffMutex&) = delete;
  HandoffMutex& operator=(const HandoffMutex&) = delete;

  void lock() { sem_.acquire(); }
  // May fail spuriously (as std::mutex::try_lock may).
  bool try_lock() { return sem_.try_acquire(); }
  void unlock() { sem_.release(); }

 private:
  std::binary_semaphore sem_{1};
};

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_HANDOFF_MUTEX_H_
