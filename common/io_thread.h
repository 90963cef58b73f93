// Which threads must never block, and the check that they do not.
//
// One io thread serves every slot of a host (LMTP, client API, replication,
// the coordinator heartbeat): if it stalls, heartbeats stop and every master
// on the host fences itself once its lease runs out. So every call that can
// block (SQLite, fsync, a file read, a lock that an applier holds for a
// batch) runs on a worker, awaited with Offload() (common/offload.h).
//
// The rule is checked at run time: a thread that runs an io_context marks
// itself with an IoThreadScope, and the blocking entry points of the storage
// engine (Slot) call CheckMayBlock(). In a build with assertions (NDEBUG
// unset: the ASan+UBSan build the test command runs) a blocking call on a
// marked thread aborts with the name of the call, so every test that drives
// a daemon also proves that its io thread never blocked on a slot.
#ifndef MAILREPL_COMMON_IO_THREAD_H_
#define MAILREPL_COMMON_IO_THREAD_H_

namespace mailrepl {

// Marks the calling thread as an io thread until the scope ends. Nests.
class IoThreadScope {
 public:
  IoThreadScope();
  ~IoThreadScope();
  IoThreadScope(const IoThreadScope&) = delete;
  IoThreadScope& operator=(const IoThreadScope&) = delete;

 private:
  bool was_;
};

// True on a thread inside an IoThreadScope.
bool OnIoThread();

// Called at the top of a function that may block. With assertions on, aborts
// (naming `what`) when called on an io thread; without, does nothing.
void CheckMayBlock(const char* what);

}  // namespace mailrepl

#endif  // MAILREPL_COMMON_IO_THREAD_H_
